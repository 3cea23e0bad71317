"""Plan to every Ray command returned, on a real Ray: ``.venv/bin/python -m benchmarks.ray_apply_bench [--jobs 50]``.

Needs the test Ray head (``scripts/services.sh up``; its dashboard URL is read from ``DCFLEX_TEST_RAY_DASHBOARD``,
in the environment or in ``var/services/env``). Options: ``--concurrency 16,50`` (one round per value, the
engine's ``max_concurrency`` is 16), ``--poll`` (the job-side helper's ``DCFLEX_POLL_S``), ``--grace``
(``dcflex.checkpoint_grace_s``).

Submits ``--jobs`` resumable preemptible Ray jobs (metadata ``dcflex.tier=preemptible``, ``dcflex.resumable=true``,
``dcflex.gpus=1``, a short ``dcflex.checkpoint_grace_s``), each a tiny stdlib loop run by this virtualenv's
Python from a working_dir of its own (one file): it imports ``gateway.jobside``, and when asked to checkpoint
it writes its step counter, acknowledges at once and leaves (``stop_after``). ``entrypoint_num_cpus=0`` and no
custom resource, so all of them run at once on the small test head (each costs a driver process and Ray's
JobSupervisor actor process). The bench waits until every job is at work (it writes a start marker).

Then each round, as the engine does it, with the gateway's real job API (``gateway.api``: ``JobDirectives`` +
``CheckpointAcks``) served in-process and the adapter built by ``RayAdapter.from_config``: one ``snapshot()``
(``GET /api/jobs/``; the planner sees only this bench's jobs, so another user's jobs on the head are never
touched), one ``plan()`` for a target no running job survives (every job gets CHECKPOINT_STOP), and every shed
command sent through the engine's ``Executor`` (journaled before and after, ``concurrency`` in flight): each
command asks the job to checkpoint, waits for its acknowledgement, stops it and waits until Ray says it ended.
Then the restore: ``build_restore`` from the journal's outstanding commands (ramp out of the way), every
RESTART (resubmission with ``DCFLEX_RESUME_FROM``) sent the same way, and the wait until every resubmitted
job is back at work, checking it resumed from the step it acknowledged. The next round acts on those.

Prints one JSON object; per round: ``snapshot_s``, ``plan_ms``, ``issue_s`` (plan ready → every shed command
returned: every job acknowledged and stopped), ``plan_to_issued_s`` (snapshot + plan + issue: what an event's
first plan costs after the event arrives; add ``event_latency_bench``'s event → first command for the VEN's
part), per-command latency p50/p95/max, ``acknowledged``, ``ack_wait_s`` (directive issued → acknowledgement
received, which the helper's poll interval bounds), ``stop_after_ack_s`` (acknowledgement → the adapter sees
Ray report the job ended; ``ray_end_after_ack_s``: → the end time Ray recorded for it), ``restore_s``
(restore built → every resubmission returned), ``back_at_work_s`` (restore built → every resubmitted job
running again) and ``resumed_from_checkpoint``.
The bench stops every job it submitted (resubmissions included) at the end, also after a failure, then deletes
them from Ray's job table (``DELETE /api/jobs/{id}``) so its runs do not slow later snapshots.

A shared head: another dcflex gateway planning over the same Ray (an end-to-end test) sees these jobs as
preemptible and resumable and may stop them too (after their grace: they poll this bench's API, not its own),
and its load skews the timings. ``other_jobs_live`` (per round) and ``cleanup.ended_by_others`` show it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.ray.adapter import RayAdapter
from adapters.ray.client import RayDashboardClient
from adapters.ray.levers import resubmission_id
from adapters.ray.model import JobSpec
from gateway.api import ApiServer, build_app
from gateway.app import power_model
from gateway.clock import SystemClock
from gateway.config import DcflexConfig
from gateway.domain import ActionKind, Directive, JobState, Segment
from gateway.engine.executor import Executor
from gateway.engine.restore import build_restore
from gateway.jobchannel import CheckpointAcks, JobDirectives
from gateway.journal import Journal
from gateway.planner import PlannerPolicy, plan
from gateway.power.model import PowerModel

ROOT = Path(__file__).resolve().parents[1]
PREFIX = f"dcflex-rbench-{os.getpid()}-{uuid.uuid4().hex[:4]}"   # every job of this run starts with it
LIFETIME_S = 900   # a job never outlives a crashed bench by much
LIVE = (JobState.PENDING, JobState.RUNNING, JobState.CHECKPOINTING)

JOB = '''\
import os, sys, time
from gateway import jobside

ckpt, me = sys.argv[1], os.environ["DCFLEX_JOB_ID"]
resume = jobside.resume_from()
step = int(open(resume).read()) if resume else 0
jobside.should_checkpoint()  # starts the helper's poller
with open(os.path.join(ckpt, me + ".start"), "w") as f:
    f.write(str(step))
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    time.sleep(0.05)
    step += 1
    if jobside.should_checkpoint():
        asked = jobside.current()
        path = os.path.join(ckpt, me + ".step")
        with open(path, "w") as f:
            f.write(str(step))
        jobside.acknowledge(path, asked.event_id if asked else "")
        if asked is None or asked.stop_after:
            jobside.flush(5)
            break
'''


def service_env(key: str) -> str:
    if key in os.environ:
        return os.environ[key]
    saved = ROOT / "var" / "services" / "env"
    if saved.exists():
        for line in saved.read_text().splitlines():
            name, eq, value = line.partition("=")
            if eq and name == key:
                return value
    raise SystemExit(f"{key} is neither in the environment nor in {saved}: start the test Ray (scripts/services.sh up)")


def config(n_jobs: int, dashboard: str, gateway_url: str, workdir: Path) -> DcflexConfig:
    return DcflexConfig.model_validate({
        "site": {"nodes": max(1, -(-n_jobs // 64)), "gpus_per_node": min(n_jobs, 64), "ramp_rate_kw_per_min": 1e6,
                 "baseline_minutes": 1},
        "scheduler": {"kind": "ray", "retries": 2, "command_timeout_s": 30.0,
                      # no GPU holds: each is a short Ray driver on the head, twice per job, which this
                      # 2-vCPU machine would spend most of the run starting (and the figure is the commands')
                      "ray": {"dashboard_url": dashboard, "gateway_url": gateway_url, "hold_capacity": False}},
        "policy": {"tolerance_kw": 0.01},   # a few test jobs draw only a few kW
        "journal": {"path": str(workdir / "journal.sqlite3")},
        "api": {"host": "127.0.0.1", "port": 0},
    })


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def markers(ckpt: Path, ids: Sequence[str]) -> dict[str, int]:
    """The jobs at work: id → the step each started from (their start markers)."""
    got = {}
    for jid in ids:
        p = ckpt / f"{jid}.start"
        text = p.read_text() if p.exists() else ""
        if text:
            got[jid] = int(text)
    return got


def checkpoint_step(ckpt: Path, jid: str) -> int | None:
    p = ckpt / f"{jid}.step"
    return int(p.read_text()) if p.exists() else None


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": round(statistics.median(values), 3), "p95": round(pct(values, 0.95), 3), "max": round(max(values), 3)}


async def at_work(client: RayDashboardClient, ckpt: Path, ids: Sequence[str], within: float) -> dict[str, int]:
    """Wait until every job in ``ids`` has written its start marker; fail early (with its logs) on one that ended."""
    deadline = time.monotonic() + within
    next_check = time.monotonic() + 5.0
    while True:
        got = markers(ckpt, ids)
        if len(got) == len(ids):
            return got
        if time.monotonic() > next_check:
            for job in await client.list_jobs():
                sid = job.submission_id or ""
                if sid in ids and job.terminal and sid not in got:
                    logs = await client.job_logs(sid)
                    raise SystemExit(f"bench job {sid} ended ({job.status}) before starting: {logs[-800:]}")
            next_check = time.monotonic() + 5.0
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(got)} of {len(ids)} bench jobs at work after {within:g} s")
        await asyncio.sleep(0.2)


async def one_round(adapter: RayAdapter, acks: CheckpointAcks, journal: Journal, model: PowerModel, policy: PlannerPolicy,
                    ids: list[str], concurrency: int, event_id: str, ckpt: Path) -> tuple[dict[str, object], list[str]]:
    """Shed every job in ``ids`` and restore them; the figures and the resubmitted jobs' ids."""
    clock = adapter.clock
    latencies: dict[str, list[float]] = {}
    failures: list[str] = []

    async def emit(kind: str, owner: str, facts: Mapping[str, object]) -> None:
        if kind == "action" and facts.get("outcome") == "done":
            latencies.setdefault(str(facts["kind"]), []).append(float(str(facts["latency_s"])))
        elif kind == "alert":
            failures.append(str(facts.get("message")))

    executor = Executor(adapter, journal, clock, emit, dry_run=False, concurrency=concurrency)
    mine = set(ids)
    t0 = time.perf_counter()
    full = await adapter.snapshot()
    t1 = time.perf_counter()
    snap = replace(full, jobs=tuple(j for j in full.jobs if j.job_id in mine))
    now = clock.now()
    site_kw = model.site_kw(snap)
    end = now + timedelta(hours=2)
    directive = Directive(
        event_id=event_id, modification=0, segments=(Segment(start=now, end=end, target_kw=site_kw * 0.05),),
        baseline_kw=site_kw, ramp_start=now, target_by=now, end=end, recovery_end=end + timedelta(minutes=30),
        reason="bench: every job stopped",
    )
    p = plan(directive, snap, policy, now)
    t2 = time.perf_counter()
    strangers = [a.key for a in p.shed if a.job_id not in mine]
    if strangers:  # cannot happen (the planner saw only ours); never act on another user's job
        raise SystemExit(f"the plan touches jobs this bench did not submit: {strangers[:5]}")
    outcomes = await executor.run_all(event_id, p.shed, {})
    t3 = time.perf_counter()
    records = [r for r in adapter.checkpoints if r.event_id == event_id]
    acked = [r for r in records if r.acknowledged and acks.get(r.job_id) is not None]
    ack_at = {r.job_id: acks.get(r.job_id).at for r in acked}  # type: ignore[union-attr]
    asked_to_ack = [(ack_at[r.job_id] - r.started_at).total_seconds() for r in acked]
    ended_at = {j.submission_id: j.end_time for j in await adapter.client.list_jobs() if j.submission_id in ack_at}
    ray_end = [(end - ack_at[sid]).total_seconds() for sid, end in ended_at.items() if sid and end is not None]
    undos = build_restore(event_id, journal.outstanding(event_id), clock.now(), 1e6)
    t4 = time.perf_counter()
    back = await executor.run_all(event_id, [u.action for u in undos], {u.action.key: u.covers for u in undos})
    t5 = time.perf_counter()
    stopped = [a.job_id for a in p.shed if a.kind is ActionKind.CHECKPOINT_STOP]
    new_ids = [resubmission_id(jid, event_id) for jid in stopped]
    started = await at_work(adapter.client, ckpt, new_ids, within=max(120.0, 3.0 * len(new_ids)))
    t6 = time.perf_counter()
    resumed = sum(started[resubmission_id(jid, event_id)] == checkpoint_step(ckpt, jid) for jid in stopped)
    return {
        "concurrency": concurrency,
        "jobs_in_snapshot": len(full.jobs),
        "bench_jobs_planned": len(snap.jobs),
        "other_jobs_live": sum(1 for j in full.jobs if not j.job_id.startswith(PREFIX) and j.state in LIVE),
        "snapshot_s": round(t1 - t0, 3),
        "plan_ms": round((t2 - t1) * 1e3, 2),
        "issue_s": round(t3 - t2, 3),
        "plan_to_issued_s": round(t3 - t0, 3),
        "shed_commands": dict(Counter(a.kind.value for a in p.shed)),
        "plan_notes": list(p.notes)[:3],
        "shed_ok": sum(o.ok for o in outcomes),
        "acknowledged": sum(r.acknowledged for r in records),
        "ack_wait_s": spread(asked_to_ack),
        "stop_after_ack_s": spread([r.waited_s - w for r, w in zip(acked, asked_to_ack, strict=True)]),
        "ray_end_after_ack_s": spread(ray_end),
        "restore_s": round(t5 - t4, 3),
        "restore_commands": dict(Counter(u.action.kind.value for u in undos)),
        "restore_ok": sum(o.ok for o in back),
        "back_at_work_s": round(t6 - t4, 3),
        "resumed_from_checkpoint": resumed,
        "latency_s": {kind: spread(v) for kind, v in sorted(latencies.items())},
        "failures": failures[:10],
        "failures_n": len(failures),
    }, new_ids


async def cleanup(client: RayDashboardClient, last: Sequence[str]) -> dict[str, int]:
    """Stop every job of this run still running (resubmissions too) and wait, bounded, until Ray says they ended.
    Counts the jobs of the last round that had already ended: someone else stopped them (another dcflex gateway
    planning over the same head sees these preemptible jobs too)."""
    asked, ended = 0, 0
    for job in await client.list_jobs():
        sid = job.submission_id or ""
        if sid.startswith(PREFIX) and not job.terminal:
            await client.stop_job(sid)
            asked += 1
        elif sid in last:
            ended += 1
    if ended:
        logging.getLogger("dcflex.bench").warning(
            "%d bench job(s) had ended before the bench stopped them: another gateway on this Ray head stopped them? "
            "The figures of the rounds they overlap are suspect", ended)
    deadline = time.monotonic() + 60.0
    while True:
        ours = [j for j in await client.list_jobs() if (j.submission_id or "").startswith(PREFIX)]
        left = [j for j in ours if not j.terminal]
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    # Ray keeps every job it ever ran and GET /api/jobs/ lists them all: without this, each run would add
    # 150 ended jobs to every later snapshot (this bench's and anyone else's on the head).
    gate = asyncio.Semaphore(8)

    async def delete(sid: str) -> bool:
        async with gate:
            return (await client.request("DELETE", f"/api/jobs/{sid}", ok=(200, 404))).status == 200

    deleted = await asyncio.gather(*(delete(j.submission_id or "") for j in ours if j.terminal))
    return {"stop_requests": asked, "ended_by_others": ended, "left_running": len(left), "deleted": sum(deleted)}


async def submit_all(adapter: RayAdapter, n_jobs: int, wd: str, ckpt: Path, poll_s: float, grace_s: float) -> list[str]:
    md = {"dcflex.tier": "preemptible", "dcflex.resumable": "true", "dcflex.gpus": "1",
          "dcflex.checkpoint_grace_s": f"{grace_s:g}", "dcflex.restart_s": "30", "job_name": f"{PREFIX}-train"}
    env = {"working_dir": wd, "env_vars": {"DCFLEX_POLL_S": f"{poll_s:g}"}}
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        spec = JobSpec(f"{sys.executable} job.py {ckpt} {LIFETIME_S}", f"{PREFIX}-{i:03d}", env, md, entrypoint_num_cpus=0)
        async with gate:
            return await adapter.submit(spec)

    return list(await asyncio.gather(*(one(i) for i in range(n_jobs))))


async def measure(n_jobs: int, concurrencies: Sequence[int], poll_s: float, grace_s: float, workdir: Path) -> dict[str, object]:
    dashboard = service_env("DCFLEX_TEST_RAY_DASHBOARD")
    clock, acks = SystemClock(), CheckpointAcks()
    directives = JobDirectives(clock)
    app = build_app(status=dict, healthy=lambda: True, acks=acks, clock=clock, directives=directives)
    jobdir, ckpt = workdir / "job", workdir / "ckpt"
    jobdir.mkdir()
    ckpt.mkdir()
    (jobdir / "job.py").write_text(JOB)
    async with ApiServer(app, "127.0.0.1", 0) as api:
        cfg = config(n_jobs, dashboard, api.url, workdir)
        adapter = RayAdapter.from_config(cfg, directives=directives, acks=acks, clock=clock)
        model = power_model(cfg)
        policy = PlannerPolicy(model=model, ramp_rate_kw_per_min=cfg.site.ramp_rate_kw_per_min,
                               tolerance_kw=cfg.policy.tolerance_kw, min_cap_w=cfg.site.min_cap_w,
                               max_cap_w=cfg.site.max_cap_w)
        version = (await adapter.client.version()).get("ray_version")
        mem_before = mem_available_mb()
        rounds: list[dict[str, object]] = []
        ids: list[str] = []
        try:
            wd = await adapter.client.upload_working_dir(jobdir)
            t0 = time.perf_counter()
            ids = await submit_all(adapter, n_jobs, wd, ckpt, poll_s, grace_s)
            t1 = time.perf_counter()
            await at_work(adapter.client, ckpt, ids, within=max(180.0, 4.0 * n_jobs))
            t2 = time.perf_counter()
            mem_running = mem_available_mb()
            with Journal(workdir / "journal.sqlite3") as journal:
                for i, conc in enumerate(concurrencies):
                    result, ids = await one_round(adapter, acks, journal, model, policy, ids, conc, f"{PREFIX}-ev{i}", ckpt)
                    rounds.append(result)
        finally:
            stopped = await cleanup(adapter.client, ids)
            await adapter.aclose()
    return {
        "benchmark": "ray_plan_to_all_commands",
        "ray_version": version,
        "jobs": n_jobs,
        "helper_poll_s": poll_s,
        "checkpoint_grace_s": grace_s,
        "submit_s": round(t1 - t0, 3),
        "start_all_s": round(t2 - t1, 3),
        "mem_available_mb": {"before": round(mem_before), "all_running": round(mem_running),
                             "per_job": round((mem_before - mem_running) / max(1, n_jobs), 1)},
        "rounds": rounds,
        "cleanup": stopped,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--concurrency", default="16,50", help="commands in flight, one round per comma-separated value")
    ap.add_argument("--poll", type=float, default=1.0, help="the job-side helper's poll interval (DCFLEX_POLL_S)")
    ap.add_argument("--grace", type=float, default=10.0, help="dcflex.checkpoint_grace_s of every job")
    args = ap.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="dcflex-rbench-") as tmp:
        result = asyncio.run(measure(args.jobs, concurrencies, args.poll, args.grace, Path(tmp)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
