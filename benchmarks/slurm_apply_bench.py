"""Plan to all commands issued, on a real Slurm: ``.venv/bin/python -m benchmarks.slurm_apply_bench [--jobs 500]``.

Needs a Slurm with a GPU per job. The test Slurm declares 8; start it larger first::

    DCFLEX_SLURM_CPUS=512 DCFLEX_SLURM_GPUS=512 DCFLEX_SLURM_CRED_EXPIRE=120 scripts/services.sh up

(120 s is Slurm's default credential lifetime; the tests use 10 s so requeued jobs restart quickly, and
under a burst of job steps slurmd can take longer than that to launch one.)

(``scripts/services.sh up`` with no overrides puts the test-sized Slurm back.)

Submits ``--jobs`` one-GPU batch jobs as two job arrays (``sleep``; nothing else runs on the node):
half tagged ``flex-50``, half ``preemptible`` and not requeueable, and waits until all run. Then, as
the engine does it: one ``snapshot()`` through the Slurm adapter (``squeue --json`` + ``sinfo
--json``), one ``plan()`` for a target deep enough that every job is touched (the flexible ones
capped as deep as their tier allows, the preemptible ones paused), and every shed command sent
through the engine's executor (journaled before and after, ``--concurrency`` in flight, as the
engine's ``max_concurrency``). The power-cap command is the default template with ``true`` in place
of ``nvidia-smi`` (there are no GPUs): ``srun --overlap --jobid=J -w NODE true``, a real job step.
Then the restore (resume and uncap, from the journal) is sent the same way and timed.

Prints one JSON object: ``snapshot_s``, ``plan_ms``, ``issue_s`` (plan ready → every shed command
returned), ``plan_to_issued_s`` (their sum with the snapshot: what an event's first plan costs),
``restore_s``, per-kind counts and command latency percentiles, how many times the queue was read
(``squeue_reads``: levers share reads, see ``adapters/slurm/reader.py``), and failures (there should be none).
The bench cancels its own jobs at the end (``scancel`` of the jobs it submitted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.slurm.adapter import SlurmAdapter
from gateway.app import power_model
from gateway.clock import SystemClock
from gateway.config import DcflexConfig
from gateway.domain import Directive, Segment
from gateway.engine.executor import Executor
from gateway.engine.restore import build_restore
from gateway.journal import Journal
from gateway.planner import PlannerPolicy, plan

ROOT = Path(__file__).resolve().parents[1]
PREFIX = f"dcflex-bench-{os.getpid()}"


def slurm_env() -> dict[str, str]:
    """The process environment plus what ``scripts/services.sh up`` saved (SLURM_CONF, ...)."""
    env = dict(os.environ)
    saved = ROOT / "var" / "services" / "env"
    if saved.exists():
        for line in saved.read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq and key.startswith(("SLURM_", "DCFLEX_SLURM_")):
                env.setdefault(key, value)
    return env


async def sh(*argv: str, env: Mapping[str, str], within: float = 60.0) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, env=dict(env), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(within):
        out, err = await proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode().strip()}")
    return out.decode()


def config(gpus: int, workdir: Path) -> DcflexConfig:
    return DcflexConfig.model_validate({
        "site": {"nodes": max(1, gpus // 64), "gpus_per_node": min(gpus, 64), "ramp_rate_kw_per_min": 1e6, "baseline_minutes": 1},
        "tiers": {"default": "critical", "rules": [
            {"tier": "flex-50", "name_pattern": f"{PREFIX}-cap"},
            {"tier": "preemptible", "name_pattern": f"{PREFIX}-pause"},
        ]},
        "scheduler": {"kind": "slurm", "retries": 2, "command_timeout_s": 60.0, "slurm": {
            "power_cap_command": ["srun", "--overlap", "--jobid={job_id}", "-w", "{node}", "true", "{watts}"],
        }},
        "journal": {"path": str(workdir / "journal.sqlite3")},
    })


async def node_gpus(env: Mapping[str, str]) -> int:
    out = await sh("sinfo", "-h", "-o", "%G", env=env)
    total = 0
    for field in out.split():
        for part in field.split(","):
            bits = part.split(":")
            if bits[0] == "gpu" and bits[-1].split("(")[0].isdigit():
                total += int(bits[-1].split("(")[0])
    return total


async def submit(env: Mapping[str, str], n_jobs: int, workdir: Path) -> list[str]:
    half = n_jobs // 2
    ids = []
    for name, count, requeue in ((f"{PREFIX}-cap", n_jobs - half, "--requeue"), (f"{PREFIX}-pause", half, "--no-requeue")):
        if count:
            out = await sh("sbatch", "--parsable", f"--job-name={name}", f"--array=0-{count - 1}", "--gres=gpu:1",
                           "-c", "1", requeue, f"--chdir={workdir}", "--output=/dev/null", "--wrap", "sleep 3600",
                           env=env)
            ids.append(out.strip().split(";")[0])
    return ids


async def wait_running(env: Mapping[str, str], arrays: list[str], n_jobs: int, within: float) -> float:
    started = time.monotonic()
    while True:
        out = await sh("squeue", "-h", "-r", "-t", "RUNNING", "-o", "%F", env=env)
        running = sum(1 for line in out.split() if line in arrays)
        if running >= n_jobs:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise SystemExit(f"only {running} of {n_jobs} bench jobs run after {within:g} s: is the node large enough?")
        await asyncio.sleep(1.0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure(n_jobs: int, concurrency: int, workdir: Path) -> dict[str, object]:
    env = slurm_env()
    gpus = await node_gpus(env)
    if gpus < n_jobs:
        raise SystemExit(f"the Slurm at {env.get('SLURM_CONF', '(no SLURM_CONF)')} has {gpus} GPU(s), fewer than "
                         f"--jobs {n_jobs}: start it with DCFLEX_SLURM_CPUS={n_jobs} DCFLEX_SLURM_GPUS={n_jobs} "
                         "scripts/services.sh up")
    cfg = config(gpus, workdir)
    clock = SystemClock()
    adapter = SlurmAdapter.from_config(cfg, clock=clock, env=env)
    model = power_model(cfg)
    policy = PlannerPolicy(model=model, ramp_rate_kw_per_min=cfg.site.ramp_rate_kw_per_min, tolerance_kw=0.01,
                           min_cap_w=cfg.site.min_cap_w, max_cap_w=cfg.site.max_cap_w, allow_checkpoint_stop=False)
    latencies: dict[str, list[float]] = {}
    failures: list[str] = []

    async def emit(kind: str, owner: str, facts: Mapping[str, object]) -> None:
        if kind == "action" and facts.get("outcome") == "done":
            latencies.setdefault(str(facts["kind"]), []).append(float(str(facts["latency_s"])))
        elif kind == "alert":
            failures.append(str(facts.get("message")))

    arrays = await submit(env, n_jobs, workdir)
    try:
        start_s = await wait_running(env, arrays, n_jobs, within=max(120.0, n_jobs * 0.5))
        with Journal(workdir / "journal.sqlite3") as journal:
            executor = Executor(adapter, journal, clock, emit, dry_run=False, concurrency=concurrency)
            t0 = time.perf_counter()
            snap = await adapter.snapshot()
            t1 = time.perf_counter()
            now = clock.now()
            site_kw = model.site_kw(snap)
            end = now + timedelta(hours=2)
            directive = Directive(
                event_id="bench-1", modification=0, segments=(Segment(start=now, end=end, target_kw=site_kw * 0.3),),
                baseline_kw=site_kw, ramp_start=now, target_by=now, end=end, recovery_end=end + timedelta(minutes=30),
                reason="bench: every job touched",
            )
            p = plan(directive, snap, policy, now)
            t2 = time.perf_counter()
            outcomes = await executor.run_all("bench-1", p.shed, {})
            t3 = time.perf_counter()
            undos = build_restore("bench-1", journal.outstanding("bench-1"), clock.now(), 1e6)
            t4 = time.perf_counter()
            back = await executor.run_all("bench-1", [u.action for u in undos], {u.action.key: u.covers for u in undos})
            t5 = time.perf_counter()
    finally:
        await sh("scancel", *arrays, env=env)
    bench_jobs = [j for j in snap.jobs if j.name.startswith(PREFIX)]
    return {
        "jobs": n_jobs,
        "jobs_in_snapshot": len(bench_jobs),
        "concurrency": concurrency,
        "start_all_s": round(start_s, 1),
        "snapshot_s": round(t1 - t0, 3),
        "plan_ms": round((t2 - t1) * 1e3, 2),
        "issue_s": round(t3 - t2, 3),
        "plan_to_issued_s": round(t3 - t0, 3),
        "site_kw": round(site_kw, 1),
        "target_kw": round(site_kw * 0.3, 1),
        "expected_kw": round(p.expected_kw, 1),
        "plan_notes": list(p.notes),
        "shed_commands": dict(Counter(a.kind.value for a in p.shed)),
        "shed_ok": sum(o.ok for o in outcomes),
        "restore_s": round(t5 - t4, 3),
        "restore_commands": dict(Counter(u.action.kind.value for u in undos)),
        "restore_ok": sum(o.ok for o in back),
        "squeue_reads": adapter.reader.job_reads,
        "latency_s": {kind: {"p50": round(statistics.median(v), 3), "p95": round(pct(v, 0.95), 3),
                             "max": round(max(v), 3)} for kind, v in sorted(latencies.items())},
        "failures": failures[:10],
        "failures_n": len(failures),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16, help="commands in flight (the engine's max_concurrency)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dcflex-bench-") as tmp:
        result = asyncio.run(measure(args.jobs, args.concurrency, Path(tmp)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
