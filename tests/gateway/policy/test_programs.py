"""``[[policy.programs]]``: one utility's programs read the same signal differently; an event is read with the
keys of the first program whose market context matches its own, and ``[policy]``'s everywhere else."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.config import DcflexConfig, PolicyConfig
from gateway.config.loader import load_config_text
from gateway.engine import Engine, EngineSettings
from gateway.exceptions import ConfigError
from gateway.journal import Journal
from gateway.power import PowerModel
from simulators import SimulatedCluster
from tests.gateway.engine.conftest import small_mix
from tests.gateway.policy import BEFORE, event, run, signal, targets

CRITICAL_PEAK = "oadr://utility.example/critical-peak"
CAPACITY = "oadr://utility.example/capacity-*"
PROGRAMS = [
    {"market_context": CRITICAL_PEAK, "simple_levels": {"0": 0.0, "1": 0.3, "2": 0.6, "3": 0.9},
     "load_dispatch": "delta", "default_ramp_s": 60.0},
    {"market_context": CAPACITY, "opt_in_test_events": True},
]


def policy() -> PolicyConfig:
    return PolicyConfig.model_validate({"programs": PROGRAMS})


def test_the_first_matching_program_lays_its_keys_over_the_policy() -> None:
    base = policy()
    peak = base.for_program(CRITICAL_PEAK)
    assert (peak.simple_levels["2"], peak.load_dispatch, peak.default_ramp_s) == (0.6, "delta", 60.0)
    assert (peak.default_recovery_s, peak.tolerance_kw) == (base.default_recovery_s, base.tolerance_kw)  # kept
    capacity = base.for_program("oadr://utility.example/capacity-summer")  # a pattern
    assert capacity.opt_in_test_events and capacity.simple_levels == base.simple_levels
    assert base.for_program("oadr://other.example/dr") is base and base.for_program("") is base


def test_the_same_signal_reads_per_program() -> None:
    level2 = event(signal("SIMPLE", "level", 2))
    general = targets(run(level2, policy=policy()))
    peak = targets(run(replace(level2, program=CRITICAL_PEAK), policy=policy().for_program(CRITICAL_PEAK)))
    assert general == pytest.approx([4100 - 435]) and peak == pytest.approx([4100 - 870])  # 30 % vs 60 % of 1450 kW
    dispatch = event(signal("LOAD_DISPATCH", "level", 2000))
    assert targets(run(dispatch, policy=policy().for_program(CRITICAL_PEAK))) == pytest.approx([2100])  # a delta
    assert targets(run(dispatch, policy=policy())) == pytest.approx([2000])  # [policy]: a setpoint


def test_programs_are_validated_with_their_key_paths() -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text('[[policy.programs]]\nmarket_context = "a"\nsimple_levels = {"7" = 0.5}\n'
                         '[[policy.programs]]\nmarket_context = "b"\nload_dispatch = "sideways"\n')
    problems = dict(err.value.problems)
    assert "is not a SIMPLE level" in problems["policy.programs[0].simple_levels"], problems
    assert "'setpoint' or 'delta'" in problems["policy.programs[1].load_dispatch"], problems
    with pytest.raises(ConfigError) as err:
        load_config_text('[[policy.programs]]\nmarket_context = "a"\n[[policy.programs]]\nmarket_context = "a"\n')
    assert "given twice" in dict(err.value.problems)["policy.programs"], err.value.problems


async def test_the_engine_reads_each_event_with_its_programs_keys(tmp_path: Path) -> None:
    clock = ManualClock(BEFORE)
    model = PowerModel()
    cluster = SimulatedCluster(clock, model, 16, 8, small_mix(), seed=1)
    cfg = DcflexConfig.model_validate({"site": {"nodes": 16, "gpus_per_node": 8}, "policy": {"programs": PROGRAMS}})
    engine = Engine(scheduler=cluster, meter=cluster, journal=Journal(tmp_path / "j.sqlite3"), clock=clock,
                    settings=EngineSettings.from_config(cfg), model=model)
    level2 = event(signal("SIMPLE", "level", 2))
    general = await engine.on_event(replace(level2, event_id="general", program="oadr://other.example/dr"))
    peak = await engine.on_event(replace(level2, event_id="peak", program=CRITICAL_PEAK))
    assert general.opt_in and peak.opt_in, (general.reason, peak.reason)
    shed = {}
    for eid in ("general", "peak"):
        known = engine.journal.event(eid)
        assert known is not None and known.directive is not None
        shed[eid] = known.directive.baseline_kw - (known.directive.strictest_kw or 0.0)
    assert shed["peak"] == pytest.approx(2 * shed["general"])  # level 2 sheds 60 % of the flexible load, not 30 %
    engine.journal.close()
