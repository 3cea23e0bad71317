"""Each signal kind and type on its own: the target (or price) it yields and the reason it gives."""

from __future__ import annotations

import pytest

from gateway.config import PolicyConfig, SiteConfig
from gateway.domain import Segment
from gateway.policy import SiteContext
from gateway.policy.signals import SUPPORTED_TYPES, fmt, kw_factor, per_mwh_factor
from tests.gateway.policy import CTX, event, run, signal, targets


class TestSimple:
    @pytest.mark.parametrize(("level", "expected"), [(0, 4100.0), (1, 4100 - 0.15 * 1450), (2, 4100 - 0.30 * 1450),
                                                      (3, 4100 - 0.50 * 1450)])
    def test_level_sheds_its_fraction_of_the_flexible_load(self, level: int, expected: float) -> None:
        m = run(event(signal("SIMPLE", "level", level, minutes=60)))
        assert m.decision.opt_in
        assert targets(m) == [pytest.approx(expected)]

    def test_reason_names_level_fraction_and_numbers(self) -> None:
        m = run(event(signal("SIMPLE", "level", 2, minutes=60)))
        assert m.decision.reason == "SIMPLE level 2 → shed 30% of 1450 kW flexible load → target 3665 kW"
        assert m.directive is not None and m.directive.reason == m.decision.reason

    def test_level_zero_is_the_baseline(self) -> None:
        m = run(event(signal("SIMPLE", "level", 0, minutes=60)))
        assert targets(m) == [4100.0]
        assert "no shed" in m.decision.reason

    def test_levels_come_from_policy(self) -> None:
        policy = PolicyConfig(simple_levels={"1": 0.5, "2": 1.0})
        m = run(event(signal("SIMPLE", "level", 1, 2, 0, minutes=20)), policy=policy)
        assert targets(m) == [pytest.approx(4100 - 725), pytest.approx(4100 - 1450), 4100.0]

    def test_unconfigured_level_opts_out(self) -> None:
        m = run(event(signal("SIMPLE", "level", 3, minutes=60)), policy=PolicyConfig(simple_levels={"1": 0.1}))
        assert not m.decision.opt_in and m.directive is None
        assert m.decision.reason == "SIMPLE level 3 has no shed fraction in policy.simple_levels (configured levels: 1)"

    @pytest.mark.parametrize("value", [4, -1, 1.5])
    def test_level_outside_0_to_3_opts_out(self, value: float) -> None:
        m = run(event(signal("SIMPLE", "level", value, minutes=60)))
        assert not m.decision.opt_in
        assert m.decision.reason == f"SIMPLE level {fmt(value)} is not one of 0, 1, 2, 3"

    def test_flexible_load_larger_than_baseline_is_clipped(self) -> None:
        m = run(event(signal("SIMPLE", "level", 3, minutes=60)), ctx=SiteContext(100.0, 500.0, 0.0),
                site=SiteConfig(max_shed_fraction=1.0))
        assert targets(m) == [pytest.approx(50.0)]


class TestLoadDispatch:
    def test_setpoint_is_the_target(self) -> None:
        m = run(event(signal("LOAD_DISPATCH", "setpoint", 3500, minutes=60)))
        assert targets(m) == [3500.0]
        assert m.decision.reason == "LOAD_DISPATCH setpoint 3500 kW → target 3500 kW"

    @pytest.mark.parametrize("value", [500, -500])
    def test_delta_sheds_its_magnitude_below_baseline(self, value: float) -> None:
        m = run(event(signal("LOAD_DISPATCH", "delta", value, minutes=60)))
        assert targets(m) == [3600.0]
        assert "shed 500 kW below the 4100 kW baseline → target 3600 kW" in m.decision.reason

    def test_level_follows_policy_setpoint(self) -> None:
        m = run(event(signal("LOAD_DISPATCH", "level", 3000, minutes=60)), policy=PolicyConfig(load_dispatch="setpoint"))
        assert targets(m) == [3000.0]
        assert "read as a setpoint: policy.load_dispatch" in m.decision.reason

    def test_level_follows_policy_delta(self) -> None:
        m = run(event(signal("LOAD_DISPATCH", "level", 300, minutes=60)), policy=PolicyConfig(load_dispatch="delta"))
        assert targets(m) == [3800.0]
        assert "read as a delta: policy.load_dispatch" in m.decision.reason

    def test_signal_type_wins_over_policy(self) -> None:
        policy = PolicyConfig(load_dispatch="delta")
        assert targets(run(event(signal("LOAD_DISPATCH", "setpoint", 3000, minutes=60)), policy=policy)) == [3000.0]
        policy = PolicyConfig(load_dispatch="setpoint")
        assert targets(run(event(signal("LOAD_DISPATCH", "delta", 300, minutes=60)), policy=policy)) == [3800.0]

    @pytest.mark.parametrize(("units", "value", "kw"), [("W", 3_500_000, 3500.0), ("kW", 3500, 3500.0), ("MW", 3.5, 3500.0),
                                                        ("mw", 3.5, 3500.0), (None, 3500, 3500.0), ("", 3500, 3500.0)])
    def test_units_are_scaled_to_kw(self, units: str | None, value: float, kw: float) -> None:
        m = run(event(signal("LOAD_DISPATCH", "setpoint", value, units=units, minutes=60)))
        assert targets(m) == [pytest.approx(kw)]

    def test_reason_shows_the_units_sent(self) -> None:
        m = run(event(signal("LOAD_DISPATCH", "setpoint", 3.5, units="MW", minutes=60)))
        assert m.decision.reason == "LOAD_DISPATCH setpoint 3.5 MW → target 3500 kW"

    def test_delta_in_watts(self) -> None:
        m = run(event(signal("LOAD_DISPATCH", "delta", 250_000, units="W", minutes=60)))
        assert targets(m) == [pytest.approx(3850.0)]

    def test_unknown_units_opt_out(self) -> None:
        m = run(event(signal("LOAD_DISPATCH", "setpoint", 3500, units="therms", minutes=60)))
        assert not m.decision.opt_in
        assert m.decision.reason == "unsupported units 'therms' for LOAD_DISPATCH setpoint: dcflex reads W, kW, MW, GW"


class TestLoadControl:
    @pytest.mark.parametrize("value", [20, -20])
    def test_percent_offset(self, value: float) -> None:
        m = run(event(signal("LOAD_CONTROL", "x-loadControlPercentOffset", value, minutes=60)))
        assert targets(m) == [pytest.approx(4100 * 0.8)]
        assert "80% of the 4100 kW baseline → target 3280 kW" in m.decision.reason

    def test_setpoint_is_absolute_and_scaled(self) -> None:
        m = run(event(signal("LOAD_CONTROL", "x-loadControlSetpoint", 3.2, units="MW", minutes=60)))
        assert targets(m) == [pytest.approx(3200.0)]
        assert m.decision.reason == "LOAD_CONTROL x-loadControlSetpoint 3.2 MW → target 3200 kW"

    @pytest.mark.parametrize(("value", "kw"), [(0.7, 0.7 * 4100), (1.0, 4100.0), (3000, 3000.0)])
    def test_capacity_is_a_fraction_up_to_1_and_kw_above(self, value: float, kw: float) -> None:
        m = run(event(signal("LOAD_CONTROL", "x-loadControlCapacity", value, minutes=60)))
        assert targets(m) == [pytest.approx(kw)]

    def test_capacity_fraction_reason(self) -> None:
        m = run(event(signal("LOAD_CONTROL", "x-loadControlCapacity", 0.7, minutes=60)))
        assert m.decision.reason == "LOAD_CONTROL x-loadControlCapacity 0.7 → 70% of the 4100 kW baseline → target 2870 kW"

    def test_capacity_in_megawatts(self) -> None:
        m = run(event(signal("LOAD_CONTROL", "x-loadControlCapacity", 3.3, units="MW", minutes=60)))
        assert targets(m) == [pytest.approx(3300.0)]

    def test_signal_type_matched_regardless_of_case(self) -> None:
        m = run(event(signal("LOAD_CONTROL", "X-LOADCONTROLSETPOINT", 3300, minutes=60)))
        assert targets(m) == [3300.0]


class TestElectricityPrice:
    def _segments(self, *values: float, stype: str = "price", units: str | None = None,
                  policy: PolicyConfig | None = None) -> tuple[Segment, ...]:
        m = run(event(signal("ELECTRICITY_PRICE", stype, *values, units=units, minutes=60 // len(values))), policy=policy)
        assert m.decision.opt_in and m.directive is not None, m.decision.reason
        assert m.directive.economic
        assert all(s.target_kw is None for s in m.directive.segments)
        return m.directive.segments

    def test_price_per_mwh_by_default(self) -> None:
        assert [s.price_per_mwh for s in self._segments(120.0, 250.0)] == [120.0, 250.0]

    @pytest.mark.parametrize(("units", "factor"), [("USD/kWh", 1000.0), ("currencyPerKWh", 1000.0), ("EUR/MWh", 1.0),
                                                   ("USD", 1.0), ("USD/Wh", 1e6)])
    def test_price_units_scaled_to_per_mwh(self, units: str, factor: float) -> None:
        (seg,) = self._segments(0.25, units=units)
        assert seg.price_per_mwh == pytest.approx(0.25 * factor)

    def test_price_relative_adds_to_the_reference(self) -> None:
        (seg,) = self._segments(30.0, stype="priceRelative", policy=PolicyConfig(reference_price_per_mwh=80.0))
        assert seg.price_per_mwh == pytest.approx(110.0)

    def test_price_multiplier_multiplies_the_reference(self) -> None:
        (seg,) = self._segments(3.0, stype="priceMultiplier")
        assert seg.price_per_mwh == pytest.approx(150.0)

    def test_reason_names_economic_mode_and_the_price(self) -> None:
        m = run(event(signal("ELECTRICITY_PRICE", "price", 0.18, units="USD/kWh", minutes=60)))
        assert m.decision.reason == (
            "ELECTRICITY_PRICE price 0.18 USD/kWh = 180/MWh → economic mode: shed jobs valued below the price"
        )

    def test_unknown_energy_unit_opts_out(self) -> None:
        m = run(event(signal("ELECTRICITY_PRICE", "price", 3.0, units="USD/kWh-peak", minutes=60)))
        assert not m.decision.opt_in
        assert "unsupported units 'USD/kWh-peak' for ELECTRICITY_PRICE price" in m.decision.reason

    def test_highest_price_wins_per_interval(self) -> None:
        m = run(event(signal("ELECTRICITY_PRICE", "price", 100.0, minutes=60),
                      signal("ELECTRICITY_PRICE", "priceMultiplier", 3.0, minutes=30)))
        assert m.directive is not None
        assert [s.price_per_mwh for s in m.directive.segments] == [150.0, 100.0]


class TestUnsupported:
    def test_unknown_signal_name(self) -> None:
        m = run(event(signal("FOO", "bar", 1, minutes=60)))
        assert not m.decision.opt_in and m.directive is None
        assert m.decision.reason == (
            "unsupported signal 'FOO' (type 'bar'): dcflex maps SIMPLE, LOAD_DISPATCH, LOAD_CONTROL, ELECTRICITY_PRICE"
        )

    @pytest.mark.parametrize(("name", "stype"), [("SIMPLE", "price"), ("LOAD_DISPATCH", "multiplier"),
                                                 ("LOAD_CONTROL", "x-loadControlLevelOffset"), ("ELECTRICITY_PRICE", "level")])
    def test_known_name_with_unsupported_type_lists_the_supported_types(self, name: str, stype: str) -> None:
        m = run(event(signal(name, stype, 1, minutes=60)))
        assert not m.decision.opt_in
        allowed = ", ".join(SUPPORTED_TYPES[next(k for k in SUPPORTED_TYPES if k.value == name)])
        assert m.decision.reason == f"unsupported signal {name!r} (type {stype!r}): dcflex maps {name} of type {allowed}"

    def test_a_known_and_an_unknown_signal_opt_out_of_the_whole_event(self) -> None:
        m = run(event(signal("SIMPLE", "level", 1, minutes=60), signal("BID_LOAD", "setpoint", 10, minutes=60)))
        assert not m.decision.opt_in and m.directive is None
        assert m.decision.reason.startswith("unsupported signal 'BID_LOAD' (type 'setpoint')")
        assert "the whole event is opted out" in m.decision.reason

    def test_every_unsupported_signal_is_named(self) -> None:
        m = run(event(signal("FOO", "bar", 1, minutes=60), signal("BAZ", "qux", 1, minutes=60)))
        assert "'FOO'" in m.decision.reason and "'BAZ'" in m.decision.reason


class TestUnits:
    @pytest.mark.parametrize(("units", "factor"), [("W", 1e-3), ("watts", 1e-3), (" kW ", 1.0), ("MW", 1e3), ("GW", 1e6),
                                                   (None, 1.0), ("percent", None), ("kWh", None)])
    def test_kw_factor(self, units: str | None, factor: float | None) -> None:
        assert kw_factor(units) == factor

    @pytest.mark.parametrize(("units", "factor"), [(None, 1.0), ("USD", 1.0), ("$/kWh", 1e3), ("currencyPerMWh", 1.0),
                                                   ("EUR per GWh", 1e-3), ("USD/Wh", 1e6), ("USD/kWh-peak", None)])
    def test_per_mwh_factor(self, units: str | None, factor: float | None) -> None:
        assert per_mwh_factor(units) == factor


def test_fmt_is_short_and_exact_enough() -> None:
    assert [fmt(2650.0), fmt(2637.5), fmt(0.04), fmt(-0.04), fmt(1234567.0)] == ["2650", "2637.5", "0", "0", "1234567"]
    assert CTX.baseline_kw == 4100.0

