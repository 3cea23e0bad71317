"""The replay simulator end to end: every shipped scenario runs (cut short where long) and its report holds
together; protocol mode (a real openleadr VTN and the gateway's VEN on loopback) decides exactly as fast mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from simulators.replay.compare import ReplayOptions, limited, replay
from simulators.replay.jobs import job_stream
from simulators.replay.protocol import run_protocol
from simulators.replay.run import run_fast
from simulators.replay.scenario import LoadedScenario, load_scenario, parse_scenario

REQUIRED = ("target_met_pct", "time_to_target_s", "rebound_peak_kw", "weighted_throughput", "jobs_within_tier",
            "lost_gpu_hours", "critical_jobs_touched")


def consistent(report: dict[str, Any]) -> None:
    """What every report must satisfy, whatever the scenario."""
    assert report["checks"] == {"same_job_stream": True, "energy_adds_up": True, "no_critical_job_touched": True,
                                "every_command_undone": True}, report["checks"]
    for name, f in report["strategies"].items():
        for key in REQUIRED:
            assert key in f, (name, key)
        assert f["critical_jobs_touched"] == 0
        assert 0.0 <= f["weighted_throughput"] <= 1.0
        assert f["met_minutes"] <= f["hold_minutes"]
        assert abs(sum(e["energy_shed_kwh"] for e in f["events"]) - f["energy_shed_kwh"]) < 1e-2
        for e in f["events"]:
            assert e["state"] in ("completed", "cancelled"), (name, e)
    lost = {name: f["lost_gpu_hours"] for name, f in report["strategies"].items()}
    shed = {name: f["energy_shed_kwh"] for name, f in report["strategies"].items()}
    for name in lost:  # a strategy that sheds energy costs the jobs something, and one that costs nothing sheds nothing
        assert (lost[name] > 0) == (shed[name] > 0.5), (name, lost[name], shed[name])


async def test_phoenix_runs_every_strategy_and_dcflex_meets_the_target_within_tiers(tmp_path: Path) -> None:
    scn = load_scenario("phoenix-2025")
    out = tmp_path / "phoenix.json"
    report = await replay(scn, ReplayOptions(out=out, plots_dir=tmp_path, quiet=True, workers=1))
    consistent(report)
    assert json.loads(out.read_text())["strategies"].keys() == {"dcflex", "priority", "uniform-cap", "pause-all"}
    assert (tmp_path / "phoenix-2025-power.png").stat().st_size > 10_000
    assert (tmp_path / "phoenix-2025-tiers.png").stat().st_size > 5_000
    d = report["strategies"]["dcflex"]
    assert d["target_met_pct"] >= 99.0 and d["jobs_within_tier"] is True and d["interruptions"] == 0
    assert d["weighted_throughput"] >= 0.95  # the field demonstration kept 0.908 (its weights, the scenario's)
    (ev,) = d["events"]
    assert ev["target_kw"] == pytest.approx(0.75 * ev["baseline_kw"], abs=0.01)  # 25% below the pre-event level
    assert ev["time_to_target_s"] <= 15 * 60  # within the ramp
    pause_all = report["strategies"]["pause-all"]
    assert pause_all["interruptions"] == 6 and pause_all["jobs_within_tier"] is False
    for name, f in report["strategies"].items():
        assert d["weighted_throughput"] >= f["weighted_throughput"], name  # no baseline keeps more
        assert f["jobs"].keys() == {"p-1", "p-2", "p-3", "p-4", "p-5", "p-6"}


@pytest.mark.parametrize(("name", "cut"), [("ercot-emergency", {}), ("price-day", {}), ("year-10k", {"events": 2})])
async def test_each_shipped_scenario_runs_short_and_its_report_holds_together(name: str, cut: dict[str, Any]) -> None:
    scn = limited(load_scenario(name), **cut) if cut else load_scenario(name)
    report = await replay(scn, ReplayOptions(quiet=True, workers=2))  # strategies in two processes
    consistent(report)
    assert report["scenario"]["events"] >= 1
    d = report["strategies"]["dcflex"]
    if name == "price-day":
        assert d["target_met_pct"] is None and d["energy_shed_kwh"] > 0  # economic: no target, load still shed
    else:
        assert d["target_met_pct"] is not None and d["target_met_pct"] >= 90.0, d["events"]
        assert d["jobs_within_tier"] is True


SMALL = """
[scenario]
name = "small"
seed = 4
start = 2026-07-01T12:00:00+00:00
hours = 1.5
sample_s = 30
speed = 400

[site]
nodes = 8
gpus_per_node = 8
ramp_rate_kw_per_min = 20.0

[jobs]
trace = "small.csv"

[[events]]
id = "ev-small"
start = 2026-07-01T12:40:00+00:00
duration_min = 20
values = [30.0]
recovery_min = 5
notice_min = 20

[gateway.policy]
default_ramp_s = 300
tolerance_kw = 0.5
"""

TRACE = """job_id,submit_min,gpus,tier,workload,work_h,checkpoint_s,restart_s
c-1,0,16,critical,pt_mpt_7b_fast,10,,
f-1,0,16,flex-25,infer_llama_8b_48g,10,,
f-2,0,16,flex-50,pt_mpt_13b_sm,10,60,120
p-1,0,16,preemptible,ft_llama_8b_p3,10,60,120
"""


def small(tmp_path: Path) -> LoadedScenario:
    (tmp_path / "small.csv").write_text(TRACE)
    return parse_scenario(SMALL, "small.toml", tmp_path)


def decisions(run: Any) -> list[tuple[str, str, str | None, float | None, str]]:
    return sorted((d.key, d.kind.value, d.job_id, d.watts, d.state) for d in run.decisions)


@pytest.mark.parametrize("strategy", ["dcflex", "priority"])
async def test_protocol_and_fast_mode_make_the_same_decisions(tmp_path: Path, strategy: str) -> None:
    scn = small(tmp_path)
    stream = job_stream(scn)
    fast = await run_fast(scn, stream, strategy)
    proto = await run_protocol(scn, stream, strategy)
    assert fast.directives.keys() == proto.directives.keys() == {"ev-small"}
    f, p = fast.directives["ev-small"], proto.directives["ev-small"]
    assert (f.ramp_start, f.target_by, f.end, f.recovery_end) == (p.ramp_start, p.target_by, p.end, p.recovery_end)
    assert [s.target_kw for s in f.segments] == pytest.approx([s.target_kw for s in p.segments], abs=0.05)
    assert decisions(fast) and decisions(fast) == decisions(proto)
    assert [(c.key, c.kind) for c in fast.commands] == [(c.key, c.kind) for c in proto.commands]
    assert proto.opt_responses and all(r[-1] == "optIn" or "optIn" in map(str, r) for r in proto.opt_responses)


def test_the_cli_lists_runs_and_refuses_a_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("phoenix-2025", "ercot-emergency", "price-day", "year-10k"):
        assert name in listed
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("nodes = 8", "nodes = 0"))
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "site.nodes" in err and "greater than or equal to 1" in err
    (tmp_path / "small.csv").write_text(TRACE)
    good = tmp_path / "small.toml"
    good.write_text(SMALL)
    out = tmp_path / "r.json"
    assert main(["replay", str(good), "--quiet", "--strategies", "dcflex,uniform-cap", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["strategies"].keys() == {"dcflex", "uniform-cap"}
    assert main(["replay", str(good), "--strategies", "best"]) == 2
