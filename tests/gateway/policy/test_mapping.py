"""Directive timing, several signals in one event, and the never-raise property of ``map_event``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import PolicyConfig, SiteConfig
from gateway.domain import Directive, GridEvent, Interval, Signal
from gateway.policy import Mapping, SiteContext, map_event
from tests.gateway.policy import BEFORE, T0, event, run, signal, targets


def _directive(m: Mapping) -> Directive:
    assert m.decision.opt_in and m.directive is not None, m.decision.reason
    return m.directive


class TestTiming:
    def test_without_event_ramp_the_default_ramp_follows_the_start(self) -> None:
        d = _directive(run(event(signal("SIMPLE", "level", 2, minutes=60))))
        assert (d.ramp_start, d.target_by) == (T0, T0 + timedelta(seconds=900))
        assert d.end == T0 + timedelta(hours=1)
        assert d.recovery_end == d.end + timedelta(seconds=1800)

    def test_event_ramp_comes_before_the_start(self) -> None:
        d = _directive(run(event(signal("SIMPLE", "level", 2, minutes=60), ramp=timedelta(minutes=10))))
        assert (d.ramp_start, d.target_by) == (T0 - timedelta(minutes=10), T0)

    def test_event_recovery_overrides_the_default(self) -> None:
        d = _directive(run(event(signal("SIMPLE", "level", 2, minutes=60), recovery=timedelta(minutes=20))))
        assert d.recovery_end == T0 + timedelta(minutes=80)

    def test_defaults_come_from_policy(self) -> None:
        policy = PolicyConfig(default_ramp_s=0, default_recovery_s=0)
        d = _directive(run(event(signal("SIMPLE", "level", 2, minutes=60)), policy=policy))
        assert (d.ramp_start, d.target_by, d.recovery_end) == (T0, T0, d.end)

    def test_default_ramp_is_capped_at_the_end(self) -> None:
        d = _directive(run(event(signal("SIMPLE", "level", 2, minutes=10), minutes=10)))
        assert d.target_by == d.end == T0 + timedelta(minutes=10)

    def test_segments_follow_the_intervals(self) -> None:
        d = _directive(run(event(signal("SIMPLE", "level", 1, 2, 3, minutes=20))))
        assert [(s.start, s.end) for s in d.segments] == [
            (T0, T0 + timedelta(minutes=20)),
            (T0 + timedelta(minutes=20), T0 + timedelta(minutes=40)),
            (T0 + timedelta(minutes=40), T0 + timedelta(minutes=60)),
        ]
        assert [s.target_kw for s in d.segments] == pytest.approx([4100 - 217.5, 4100 - 435, 4100 - 725])
        assert "strictest of 3 segments shown" in d.reason
        assert (d.event_id, d.modification, d.baseline_kw) == ("evt-1", 0, 4100.0)

    def test_equal_neighbours_merge(self) -> None:
        d = _directive(run(event(signal("SIMPLE", "level", 2, 2, 1, minutes=20))))
        assert [(s.start, s.end) for s in d.segments] == [(T0, T0 + timedelta(minutes=40)),
                                                          (T0 + timedelta(minutes=40), T0 + timedelta(hours=1))]

    def test_intervals_are_clipped_to_the_event(self) -> None:
        early = signal("LOAD_DISPATCH", "setpoint", 3500, 3600, minutes=40, start=T0 - timedelta(minutes=10))
        d = _directive(run(event(early)))
        assert [(s.start, s.end, s.target_kw) for s in d.segments] == [
            (T0, T0 + timedelta(minutes=30), 3500.0),
            (T0 + timedelta(minutes=30), T0 + timedelta(hours=1), 3600.0),
        ]

    def test_a_gap_in_the_signal_leaves_no_target(self) -> None:
        d = _directive(run(event(signal("LOAD_DISPATCH", "setpoint", 3500, minutes=30))))
        assert d.target_at(T0 + timedelta(minutes=10)) == 3500.0
        assert d.target_at(T0 + timedelta(minutes=45)) is None

    def test_modification_is_carried(self) -> None:
        ev = GridEvent("evt-9", 3, T0, timedelta(hours=1), (signal("SIMPLE", "level", 1, minutes=60),))
        d = _directive(run(ev))
        assert (d.event_id, d.modification) == ("evt-9", 3)


class TestSeveralSignals:
    def test_strictest_target_wins_per_interval(self) -> None:
        simple = signal("SIMPLE", "level", 1, minutes=60)                              # 3882.5 kW all along
        dispatch = signal("LOAD_DISPATCH", "setpoint", 3950, 3700, minutes=30)       # 3950 then 3700
        m = run(event(simple, dispatch))
        assert targets(m) == [3882.5, 3700.0]
        assert m.decision.reason == (
            "LOAD_DISPATCH setpoint 3700 kW → target 3700 kW; strictest of 2 segments shown; "
            "stricter target of 2 signals per interval"
        )

    def test_targets_of_different_kinds_combine(self) -> None:
        pct = signal("LOAD_CONTROL", "x-loadControlPercentOffset", 10, minutes=60)     # 3690 kW
        cap = signal("LOAD_CONTROL", "x-loadControlCapacity", 0.95, 0.85, minutes=30)  # 3895, 3485 kW
        assert targets(run(event(pct, cap))) == pytest.approx([3690.0, 3485.0])

    def test_price_alongside_a_target_keeps_the_target(self) -> None:
        m = run(event(signal("SIMPLE", "level", 2, minutes=60), signal("ELECTRICITY_PRICE", "price", 300, minutes=60)))
        d = _directive(m)
        assert not d.economic and targets(m) == [3665.0]
        assert m.decision.reason.endswith("ELECTRICITY_PRICE ignored: a target signal takes precedence")

    def test_a_bad_value_in_one_signal_opts_out_of_all(self) -> None:
        bad = signal("LOAD_DISPATCH", "setpoint", 3.5, units="BTU", minutes=60)
        m = run(event(signal("SIMPLE", "level", 1, minutes=60), bad))
        assert not m.decision.opt_in and "unsupported units 'BTU'" in m.decision.reason

    def test_the_strictest_interval_is_judged_against_the_limits(self) -> None:
        m = run(event(signal("SIMPLE", "level", 1, minutes=60), signal("LOAD_DISPATCH", "delta", 3000, minutes=10)))
        assert not m.decision.opt_in and "requested shed 3000 kW" in m.decision.reason


# --- property: any well-formed SIMPLE / LOAD_DISPATCH event → a valid directive in [0, baseline] or an opt-out ---

_kw = st.floats(min_value=0, max_value=1e5, allow_nan=False)


@st.composite
def _signals(draw: st.DrawFn) -> Signal:
    name = draw(st.sampled_from(["SIMPLE", "LOAD_DISPATCH"]))
    if name == "SIMPLE":
        stype, units = "level", None
        values = st.integers(min_value=0, max_value=3).map(float)
    else:
        stype = draw(st.sampled_from(["setpoint", "delta", "level"]))
        units = draw(st.sampled_from([None, "W", "kW", "MW"]))
        values = st.floats(min_value=-1e7, max_value=1e7, allow_nan=False, allow_infinity=False)
    start = T0 + timedelta(seconds=draw(st.integers(min_value=-3600, max_value=3600)))
    intervals = []
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        gap = timedelta(seconds=draw(st.integers(min_value=0, max_value=600)))
        duration = timedelta(seconds=draw(st.integers(min_value=1, max_value=3 * 3600)))
        intervals.append(Interval(start + gap, duration, draw(values)))
        start = start + gap + duration
    return Signal(name, stype, tuple(intervals), units=units)


@st.composite
def _events(draw: st.DrawFn) -> GridEvent:
    return GridEvent(
        event_id="evt-p",
        modification=draw(st.integers(min_value=0, max_value=5)),
        start=T0,
        duration=timedelta(seconds=draw(st.integers(min_value=1, max_value=6 * 3600))),
        signals=tuple(draw(st.lists(_signals(), min_size=1, max_size=3))),
        ramp=timedelta(seconds=draw(st.integers(min_value=0, max_value=3600))),
        recovery=timedelta(seconds=draw(st.integers(min_value=0, max_value=3600))),
        test_event=draw(st.booleans()),
    )


@st.composite
def _contexts(draw: st.DrawFn) -> SiteContext:
    baseline = draw(_kw)
    return SiteContext(baseline, draw(st.floats(min_value=0, max_value=baseline * 1.5 + 1)), draw(_kw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ev=_events(),
    ctx=_contexts(),
    max_shed_fraction=st.floats(min_value=0, max_value=1),
    max_shed_kw=st.none() | _kw,
    load_dispatch=st.sampled_from(["setpoint", "delta"]),
    now_offset_s=st.integers(min_value=-7200, max_value=8 * 3600),
)
def test_any_well_formed_event_gets_a_valid_directive_or_an_opt_out(
    ev: GridEvent, ctx: SiteContext, max_shed_fraction: float, max_shed_kw: float | None, load_dispatch: str,
    now_offset_s: int,
) -> None:
    site = SiteConfig(max_shed_fraction=max_shed_fraction, max_shed_kw=max_shed_kw)
    policy = PolicyConfig(load_dispatch=load_dispatch, opt_in_test_events=True)  # type: ignore[arg-type]
    now = T0 + timedelta(seconds=now_offset_s)
    m = map_event(ev, ctx, site, policy, now)
    assert m.decision.reason
    if not m.decision.opt_in:
        assert m.directive is None
        assert not m.decision.reason.startswith("cannot map"), m.decision.reason
        return
    d = m.directive
    assert d is not None and d.reason == m.decision.reason
    assert now < ev.end
    assert d.ramp_start <= d.target_by <= d.end == ev.end <= d.recovery_end
    for s in d.segments:
        assert s.target_kw is not None and 0.0 <= s.target_kw <= ctx.baseline_kw
        assert ev.start <= s.start < s.end <= ev.end
    shed = ctx.baseline_kw - min(s.target_kw or 0.0 for s in d.segments)
    assert shed <= max_shed_fraction * ctx.baseline_kw + 1e-6
    assert max_shed_kw is None or shed <= max_shed_kw + 1e-6


def test_property_inputs_include_opt_ins() -> None:
    """A sanity anchor for the property: an ordinary SIMPLE event from its generator's range opts in."""
    m = map_event(event(signal("SIMPLE", "level", 3, minutes=60)), SiteContext(1000.0, 800.0, 200.0), SiteConfig(),
                  PolicyConfig(), BEFORE)
    assert targets(m) == [600.0]
