"""`make demo` runs in the suite: the whole loop on embedded defaults, its report checked."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_make_demo_runs_and_reports(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make, "make is required to run the demo the way the README says"
    proc = subprocess.run(
        [make, "-C", str(ROOT), "demo", f"DEMO_ARGS=--out-dir {tmp_path}"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "demo-report.json").read_text())
    for key in ("baseline_kw", "target_kw", "achieved_kw", "time_to_target_s", "rebound_peak_kw",
                "lost_gpu_hours", "jobs_touched", "critical_jobs_touched"):
        assert key in report, f"{key} missing from demo-report.json"
    assert report["critical_jobs_touched"] == 0
    assert report["state"] == "completed"
    assert report["target_kw"] < report["baseline_kw"]
    assert report["achieved_kw"] <= report["target_kw"] * 1.03, report
    assert report["time_to_target_s"] is not None and report["time_to_target_s"] > 0
    assert set(report["jobs_touched"]) == {"critical", "flex-10", "flex-25", "flex-50", "preemptible"}
    assert report["jobs_within_tier"] is True
    png = (tmp_path / "demo-report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "summary" in proc.stdout and "target reached" in proc.stdout
