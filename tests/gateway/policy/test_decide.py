"""Each opt-out branch, with the reason an operator reads, and the opt-ins next to them."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from gateway.config import PolicyConfig, SiteConfig
from gateway.domain import GridEvent, OptDecision
from gateway.policy import Mapping, SiteContext
from tests.gateway.policy import T0, event, run, signal, targets


def _setpoint(kw: float, **kw_event: bool) -> GridEvent:
    return event(signal("LOAD_DISPATCH", "setpoint", kw, minutes=60), **kw_event)


class TestEventDoesNotApply:
    def test_cancelled_event(self) -> None:
        m = run(_setpoint(3500, cancelled=True))
        assert m == Mapping(OptDecision(False, "event evt-1 is cancelled: nothing to follow"), None)

    @pytest.mark.parametrize("after_end", [timedelta(0), timedelta(minutes=5)])
    def test_event_already_ended(self, after_end: timedelta) -> None:
        now = T0 + timedelta(hours=1) + after_end
        m = run(_setpoint(3500), now=now)
        assert not m.decision.opt_in and m.directive is None
        assert m.decision.reason.startswith("event evt-1 already ended at 2025-05-01 19:00:00 UTC (now 2025-05-01 19:")

    def test_event_under_way_is_still_followed(self) -> None:
        m = run(_setpoint(3500), now=T0 + timedelta(minutes=59))
        assert m.decision.opt_in and targets(m) == [3500.0]

    def test_test_event_opted_out_by_default(self) -> None:
        m = run(_setpoint(3500, test_event=True))
        assert m.decision == OptDecision(False, "event evt-1 is a test event and policy.opt_in_test_events is false")

    def test_test_event_followed_when_configured(self) -> None:
        m = run(_setpoint(3500, test_event=True), policy=PolicyConfig(opt_in_test_events=True))
        assert m.decision.opt_in and targets(m) == [3500.0]

    def test_event_without_signals(self) -> None:
        assert run(event()).decision == OptDecision(False, "event evt-1 has no signals")

    def test_signal_entirely_outside_the_event_window(self) -> None:
        late = signal("SIMPLE", "level", 2, minutes=30, start=T0 + timedelta(hours=2))
        m = run(event(late))
        assert not m.decision.opt_in
        assert m.decision.reason.startswith("no signal interval of event evt-1 falls inside the event (2025-05-01T18:00:00")


class TestSiteLimits:
    def test_shed_above_max_shed_kw(self) -> None:
        m = run(_setpoint(3500), site=SiteConfig(max_shed_kw=500))
        assert m.decision == OptDecision(
            False, "requested shed 600 kW (from the 4100 kW baseline to 3500 kW) exceeds site.max_shed_kw 500 kW"
        )

    def test_shed_exactly_at_max_shed_kw_is_followed(self) -> None:
        assert run(_setpoint(3600), site=SiteConfig(max_shed_kw=500)).decision.opt_in

    def test_shed_above_max_shed_fraction(self) -> None:
        m = run(_setpoint(1000))
        assert m.decision == OptDecision(
            False,
            "requested shed 3100 kW (from the 4100 kW baseline to 1000 kW) is 75.61% of the baseline, "
            "above site.max_shed_fraction 60% (2460 kW)",
        )

    def test_shed_at_max_shed_fraction_is_followed(self) -> None:
        assert run(_setpoint(4100 * 0.4)).decision.opt_in

    def test_zero_max_shed_fraction_refuses_any_shed(self) -> None:
        m = run(_setpoint(4000), site=SiteConfig(max_shed_fraction=0.0))
        assert not m.decision.opt_in
        assert "above site.max_shed_fraction 0% (0 kW)" in m.decision.reason

    def test_strictest_interval_decides(self) -> None:
        ev = event(signal("LOAD_DISPATCH", "setpoint", 3900, 3200, 3900, minutes=20))
        m = run(ev, site=SiteConfig(max_shed_kw=800))
        assert "requested shed 900 kW (from the 4100 kW baseline to 3200 kW)" in m.decision.reason


class TestShortfall:
    def test_more_than_the_flexible_load_is_opted_in_with_the_shortfall(self) -> None:
        # 1700 kW asked, 1450 kW flexible, floor 2650 kW: 250 kW short, within the 60% maximum.
        m = run(_setpoint(2400))
        assert m.decision.opt_in and targets(m) == [2400.0]
        assert m.decision.reason == (
            "LOAD_DISPATCH setpoint 2400 kW → target 2400 kW; expected shortfall 250 kW: only 1450 kW is flexible "
            "and the site cannot go below its 2650 kW floor"
        )

    def test_shortfall_within_tolerance_is_not_mentioned(self) -> None:
        m = run(_setpoint(2647), policy=PolicyConfig(tolerance_kw=5))
        assert m.decision.opt_in and "shortfall" not in m.decision.reason

    def test_floor_above_target_counts_even_when_flexible_load_would_suffice(self) -> None:
        # The model's floor (3000) and flexible load (1450) add up to more than the measured baseline.
        m = run(_setpoint(2800), ctx=SiteContext(4100.0, 1450.0, 3000.0))
        assert "expected shortfall 200 kW" in m.decision.reason


class TestAbsurdValues:
    def test_target_below_zero(self) -> None:
        m = run(event(signal("LOAD_DISPATCH", "delta", 5000, minutes=60)))
        assert not m.decision.opt_in
        assert m.decision.reason == (
            "absurd target -900 kW: below 0 (LOAD_DISPATCH delta 5000 kW → shed 5000 kW below the 4100 kW baseline "
            "→ target -900 kW)"
        )

    def test_target_far_above_baseline(self) -> None:
        m = run(_setpoint(9000))
        assert m.decision == OptDecision(
            False,
            "absurd target 9000 kW: above 2× the 4100 kW baseline (policy.max_target_factor) "
            "(LOAD_DISPATCH setpoint 9000 kW → target 9000 kW)",
        )

    def test_target_above_baseline_but_sane_is_held_at_baseline(self) -> None:
        m = run(_setpoint(8200))
        assert m.decision.opt_in and targets(m) == [4100.0]
        assert "targets above the 4100 kW baseline are held at the baseline" in m.decision.reason

    def test_percent_offset_above_100(self) -> None:
        m = run(event(signal("LOAD_CONTROL", "x-loadControlPercentOffset", 150, minutes=60)))
        assert not m.decision.opt_in and m.decision.reason.startswith("absurd target -2050 kW: below 0")

    def test_negative_capacity(self) -> None:
        m = run(event(signal("LOAD_CONTROL", "x-loadControlCapacity", -0.5, minutes=60)))
        assert not m.decision.opt_in and "below 0" in m.decision.reason

    def test_zero_baseline_has_no_ceiling_and_nothing_to_shed(self) -> None:
        m = run(_setpoint(500), ctx=SiteContext(0.0, 0.0, 0.0))
        assert m.decision.opt_in and targets(m) == [0.0]

    def test_values_beyond_what_a_float_holds(self) -> None:
        m = run(event(signal("LOAD_DISPATCH", "setpoint", 1e306, units="GW", minutes=60)))
        assert not m.decision.opt_in and m.decision.reason.startswith("absurd target inf kW")

    def test_site_context_must_be_finite(self) -> None:
        with pytest.raises(ValueError, match=r"site_context\.baseline_kw must be a finite number"):
            SiteContext(math.nan, 0.0, 0.0)
        with pytest.raises(ValueError, match=r"site_context\.flexible_kw must be >= 0"):
            SiteContext(10.0, -1.0, 0.0)


def test_times_beyond_datetime_range_still_get_an_answer() -> None:
    m = run(_setpoint(3500), policy=PolicyConfig(default_ramp_s=1e20))
    assert not m.decision.opt_in and m.directive is None
    assert m.decision.reason.startswith("cannot map event evt-1:")


def test_mapping_has_a_directive_exactly_when_opting_in() -> None:
    with pytest.raises(ValueError, match="directive exactly when it opts in"):
        Mapping(OptDecision(True, "x"), None)
