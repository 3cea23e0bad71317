"""``dcflex report``: an event run by the real engine on the simulated cluster, then reported from
its journal (the library call and the command)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.report import build_report, render
from tests.gateway.engine.conftest import Rig, config, event


async def test_report_shows_asked_delivered_by_minute_compliance_and_impact(
        rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, value=20.0, minutes=60))
    directive = rig.engine.journal.event("ev-1").directive  # type: ignore[union-attr]
    assert directive is not None
    await rig.run_until(directive.recovery_end + timedelta(minutes=5), step=30)
    cfg = config()

    report = build_report(rig.engine.journal, "ev-1", cfg.site, cfg.policy.tolerance_kw)
    assert report["state"] == "completed" and report["asked"]["baseline_kw"] == pytest.approx(directive.baseline_kw, abs=1e-3)
    assert report["asked"]["baseline_basis"].startswith("prior-minutes: mean of")
    minutes = report["minutes"]
    assert len(minutes) == int((directive.recovery_end - directive.ramp_start).total_seconds() // 60)
    hold = [m for m in minutes if m["in_hold"]]
    assert len(hold) == report["hold_minutes"] > 0 and not report["hold_minutes_without_reading"]
    assert report["compliance_pct"] == pytest.approx(100.0 * sum(bool(m["met"]) for m in hold) / len(hold), abs=0.05)
    assert report["compliance_pct"] >= 80.0, report["compliance_pct"]
    assert all(m["shed_kw"] == pytest.approx(m["baseline_kw"] - m["actual_kw"], abs=1e-3) for m in hold)
    assert 0 < report["delivered_kwh"] and report["asked_kwh"] > 0
    impact = report["impact"]
    assert impact["jobs"] and impact["lost_gpu_hours"] == pytest.approx(sum(j["lost_gpu_hours"] for j in impact["jobs"]),
                                                                         abs=1e-3)
    assert "critical" not in impact["per_tier"]
    assert sum(report["commands_done"].values()) == len(rig.cluster.commands)
    text = render(report)
    assert "hold minutes at or below target" in text and "GPU-hours lost" in text

    # the command, on a journal written by the engine (closed first: the CLI opens it itself)
    await rig.stop()
    rig.engine.journal.close()
    cfg_file = tmp_path / "site.toml"
    cfg_file.write_text(f'[journal]\npath = "{rig.journal_path}"\n')
    out = tmp_path / "r.json"
    assert main(["report", "ev-1", "--config", str(cfg_file), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["hold_minutes"] == report["hold_minutes"]
    assert "event ev-1: completed" in capsys.readouterr().out
    assert main(["report", "nope", "--config", str(cfg_file), "--out", str(out)]) == 2
    assert "no event 'nope' in the journal" in capsys.readouterr().err
    rig.engine.journal = type(rig.engine.journal)(rig.journal_path)  # the fixture closes it at teardown
