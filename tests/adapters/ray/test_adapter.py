"""``RayAdapter``'s decisions that a healthy Ray cannot be made to show, against the fake dashboard: what the
snapshot leaves out, what is refused and why, what ``describe()`` prints, and restarts that must not happen
(already resubmitted, the job or its package gone). The levers themselves run against the real Ray in
``test_adapter_real.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.ray.adapter import RayAdapter, gateway_url_for
from adapters.ray.client import RayDashboardClient
from adapters.ray.hold import hold_id
from adapters.ray.levers import resubmission_id
from adapters.ray.model import StopRecord
from adapters.ray.tiers import RayTierResolver
from gateway.clock import ManualClock
from gateway.config.models import ApiConfig, DcflexConfig, SchedulerConfig, TiersConfig
from gateway.domain import Action, ActionKind, JobState, Tier
from gateway.exceptions import CommandFailed
from gateway.jobchannel.acks import CheckpointAcks
from gateway.jobchannel.directives import JobDirectives
from tests.adapters.ray.fakes import JOBS, FakeDashboard

NOW = datetime(2026, 11, 26, 11, 30, tzinfo=UTC)
GW = "http://127.0.0.1:8765"


def adapter(dash: FakeDashboard, clock: ManualClock | None = None, *, dry_run: bool = False) -> RayAdapter:
    clock = clock or ManualClock(NOW)
    client = RayDashboardClient(dash.url, timeout_s=2.0, retries=1, backoff_s=0.01, dry_run=dry_run)
    return RayAdapter(SchedulerConfig(kind="ray", dry_run=dry_run), RayTierResolver(TiersConfig(default=Tier.FLEX_10)),
                      directives=JobDirectives(clock), acks=CheckpointAcks(), gateway_url=GW, clock=clock, client=client)


def act(kind: ActionKind, job_id: str = "train-a") -> Action:
    watts = 200.0 if kind in (ActionKind.CAP, ActionKind.UNCAP) else None
    return Action(f"ev-1/{kind.value}/{job_id}", kind, NOW, job_id=job_id, watts=watts)


def driver_job() -> dict[str, Any]:
    return {"type": "DRIVER", "job_id": "02000000", "submission_id": None, "status": "RUNNING",
            "entrypoint": "python notebook.py", "metadata": {}, "runtime_env": {}, "start_time": 1795692300000}


async def test_snapshot_maps_submission_jobs_and_leaves_out_drivers_and_old_ones(dash: FakeDashboard) -> None:
    dash.on("GET /api/jobs/", (200, [*JOBS, driver_job()]))
    ray = adapter(dash)
    snap = await ray.snapshot()
    assert {j.job_id: j.state for j in snap.jobs} == {
        "train-a": JobState.RUNNING, "t2": JobState.COMPLETED, "t1": JobState.COMPLETED}
    train = snap.job("train-a")
    assert train is not None and (train.tier, train.gpus, train.scheduler) == (Tier.FLEX_25, 2, "ray")
    assert not train.pausable and not train.cappable and train.requeueable and train.checkpoint_s == 30.0
    later = adapter(dash, ManualClock(datetime(2026, 11, 26, 13, 0, tzinfo=UTC)))
    assert [j.job_id for j in (await later.snapshot()).jobs] == ["train-a"]  # ended over an hour ago: left out
    await ray.aclose()
    await later.aclose()


async def test_pause_cap_and_hold_are_refused_and_their_undos_do_nothing(dash: FakeDashboard) -> None:
    ray = adapter(dash)
    for kind, why in ((ActionKind.PAUSE, "pausable=False"), (ActionKind.CAP, "cappable=False")):
        with pytest.raises(CommandFailed, match=why):
            await ray.apply(act(kind))
        assert ray.describe(act(kind))[0].startswith("# refused:")
    with pytest.raises(CommandFailed, match="no nodes"):
        await ray.apply(Action("ev-1/hold_nodes/train-a", ActionKind.HOLD_NODES, NOW, job_id="train-a", nodes=("n1",)))
    for kind in (ActionKind.RESUME, ActionKind.UNCAP):
        await ray.apply(act(kind))
    assert dash.seen == []  # nothing was asked of Ray
    await ray.aclose()


async def test_a_job_that_is_not_resumable_is_never_stopped(dash: FakeDashboard) -> None:
    dash.on("GET /api/jobs/t1", (200, {**JOBS[0], "submission_id": "t1", "metadata": {"dcflex.tier": "preemptible"}}))
    ray = adapter(dash)
    with pytest.raises(CommandFailed, match=r"dcflex\.resumable=true"):
        await ray.apply(act(ActionKind.CHECKPOINT_STOP, "t1"))
    assert dash.count("POST /api/jobs/t1/stop") == 0
    await ray.aclose()


async def test_describe_says_which_requests_apply_would_make(dash: FakeDashboard) -> None:
    dash.on("GET /api/jobs/", (200, JOBS))
    ray = adapter(dash)
    await ray.snapshot()
    stop = ray.describe(act(ActionKind.CHECKPOINT_STOP))
    assert stop[-2] == f"POST {dash.url}/api/jobs/train-a/stop"
    holder = hold_id("train-a", "ev-1")
    assert stop[-1] == (f"POST {dash.url}/api/jobs/ <hold job {holder}: a detached placement group of 2 x {{GPU: 1}} "
                        "until the restart>")
    assert any("wait up to 30 s for POST /v1/jobs/train-a/checkpoint-ack" in line for line in stop)
    ray.levers.stopped["train-a"] = StopRecord("train-a", "ev-1", NOW, True, "/ckpt/step-7")
    restart = ray.describe(act(ActionKind.RESTART))
    new_id = resubmission_id("train-a", "ev-1")
    assert restart[0].startswith(f"POST {dash.url}/api/jobs/ <release job {holder}-release")  # released first
    assert restart[1].startswith(f"GET {dash.url}/api/jobs/{new_id}")
    method, url, body = restart[-1].split(" ", 2)
    sent = json.loads(body)
    assert (method, url, sent["submission_id"], sent["entrypoint"]) == ("POST", f"{dash.url}/api/jobs/", new_id,
                                                                       "python job.py 30")
    assert sent["runtime_env"]["env_vars"] == {"DCFLEX_JOB_ID": new_id, "DCFLEX_GATEWAY_URL": GW,
                                               "DCFLEX_RESUME_FROM": "/ckpt/step-7"}
    assert sent["metadata"]["dcflex.resumed_from"] == "train-a"
    assert dash.count("POST /api/jobs/") == 0
    await ray.aclose()


async def test_restart_is_not_repeated_once_the_resubmission_exists(dash: FakeDashboard) -> None:
    new_id = resubmission_id("t1", "ev-1")
    dash.on(f"GET /api/jobs/{new_id}", (200, {**JOBS[0], "submission_id": new_id}))
    ray = adapter(dash)
    await ray.apply(act(ActionKind.RESTART, "t1"))
    assert dash.count("POST /api/jobs/") == 0 and dash.count("GET /api/jobs/t1") == 0
    await ray.aclose()


async def test_restart_is_refused_when_its_package_or_the_job_is_gone(dash: FakeDashboard) -> None:
    new_id = resubmission_id("t1", "ev-1")
    dash.on(f"GET /api/jobs/{new_id}", (404, f"Job {new_id} does not exist"))
    dash.on("GET /api/jobs/t1", (200, JOBS[2]))  # STOPPED, working_dir gcs://_ray_pkg_test1.zip, never uploaded here
    ray = adapter(dash)
    with pytest.raises(CommandFailed, match=r"gcs://_ray_pkg_test1\.zip is gone from Ray's GCS"):
        await ray.apply(act(ActionKind.RESTART, "t1"))
    dash.on("GET /api/jobs/t1", (404, "Job t1 does not exist"))
    with pytest.raises(CommandFailed, match="Ray no longer lists it"):
        await ray.apply(act(ActionKind.RESTART, "t1"))
    assert dash.count("POST /api/jobs/") == 0
    await ray.aclose()


async def test_a_job_that_ended_by_itself_is_not_resubmitted(dash: FakeDashboard) -> None:
    new_id = resubmission_id("t2", "ev-1")
    dash.on(f"GET /api/jobs/{new_id}", (404, "no"))
    dash.on("GET /api/jobs/t2", (200, JOBS[1]))  # FAILED, and dcflex never stopped it
    ray = adapter(dash)
    await ray.apply(act(ActionKind.RESTART, "t2"))
    assert dash.count("POST /api/jobs/") == 0
    await ray.aclose()


async def test_dry_run_stops_nothing(dash: FakeDashboard) -> None:
    dash.on("GET /api/jobs/t1", (200, {**JOBS[0], "submission_id": "t1", "status": "PENDING"}))
    ray = adapter(dash, dry_run=True)
    await ray.apply(act(ActionKind.CHECKPOINT_STOP, "t1"))
    assert dash.count("POST /api/jobs/t1/stop") == 0
    sent = [(m, u.removeprefix(dash.url)) for m, u, _ in ray.client.sent]
    assert sent == [("POST", "/api/jobs/t1/stop"), ("POST", "/api/jobs/")]  # the stop, and the hold of its GPUs
    assert dash.count("POST /api/jobs/") == 0
    await ray.aclose()


def test_jobs_reach_the_gateway_at_the_configured_or_the_api_address() -> None:
    assert gateway_url_for(DcflexConfig(api=ApiConfig(host="127.0.0.1", port=9000))) == "http://127.0.0.1:9000"
    wildcard = gateway_url_for(DcflexConfig(api=ApiConfig(host="0.0.0.0", port=9000)))
    assert wildcard.startswith("http://") and "0.0.0.0" not in wildcard
    cfg = DcflexConfig.model_validate({"scheduler": {"ray": {"gateway_url": "http://gw.site:8765/"}}})
    assert gateway_url_for(cfg) == "http://gw.site:8765"


def test_the_gateway_builds_the_ray_adapter_around_its_directive_store() -> None:
    from gateway.app import build_scheduler, power_model

    cfg = DcflexConfig.model_validate({"scheduler": {"kind": "ray", "ray": {"dashboard_url": "http://127.0.0.1:1"}}})
    clock, directives = ManualClock(NOW), JobDirectives(ManualClock(NOW))
    parts = build_scheduler(cfg, clock, power_model(cfg), CheckpointAcks(), directives=directives)
    assert isinstance(parts.scheduler, RayAdapter) and not parts.guarded
    assert parts.scheduler.directives is directives and parts.scheduler.gateway_url == "http://127.0.0.1:8765"
    assert parts.scheduler.client.base_url == "http://127.0.0.1:1"
