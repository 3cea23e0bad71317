"""``RayDashboardClient`` against a real HTTP server on loopback that answers as Ray's dashboard does when
things go wrong: 5xx then success, nothing listening, a hang, a 4xx with Ray's text body, a job submission
whose answer is lost. Success payloads are captured from Ray 2.60 (``tests/adapters/fixtures/ray-2.60``);
the real dashboard is exercised in ``test_adapter_real.py``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from adapters.ray.client import RayDashboardClient, serve_config_with
from adapters.ray.model import KEY_ENTRYPOINT, JobSpec, RayJob, ServeInstance
from gateway.exceptions import AdapterTimeout, AdapterUnavailable, CommandFailed
from tests.adapters.ray.fakes import HANG, JOBS, SERVE, FakeDashboard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------- transport errors


async def test_5xx_then_success_is_retried(dash: FakeDashboard, client: RayDashboardClient,
                                           caplog: pytest.LogCaptureFixture) -> None:
    dash.on("GET /api/jobs/", (503, "Failed to get a response from the controller"), (500, "boom"), (200, JOBS))
    with caplog.at_level(logging.WARNING, "dcflex.adapters.ray"):
        jobs = await client.list_jobs()
    assert [j.submission_id for j in jobs] == ["train-a", "t2", "t1"]
    assert dash.count("GET /api/jobs/") == 3
    assert "HTTP 503" in caplog.text and "attempt 1 of 3" in caplog.text and "attempt 2 of 3" in caplog.text


async def test_connection_refused_is_unavailable_after_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with RayDashboardClient(url, timeout_s=2.0, retries=2, backoff_s=0.05) as c:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, "dcflex.adapters.ray"), pytest.raises(AdapterUnavailable) as info:
            await c.list_jobs()
        took = time.monotonic() - started
    assert info.value.command == ("GET", f"{url}/api/jobs/")
    assert "cannot reach the dashboard" in str(info.value) and url in str(info.value)
    assert caplog.text.count("retrying") == 2
    assert took >= 0.05 + 0.1  # backed off 0.05 s, then 0.1 s


async def test_a_hang_is_a_timeout(dash: FakeDashboard) -> None:
    dash.on("GET /api/jobs/train-a", HANG)
    async with RayDashboardClient(dash.url, timeout_s=0.3, retries=1, backoff_s=0.01) as c:
        started = time.monotonic()
        with pytest.raises(AdapterTimeout) as info:
            await c.get_job("train-a")
    assert time.monotonic() - started < 2.0
    assert info.value.timeout_s == 0.3 and info.value.command == ("GET", f"{dash.url}/api/jobs/train-a")
    assert dash.count("GET /api/jobs/train-a") == 2  # a read is retried once


async def test_4xx_is_command_failed_with_the_body_tail_and_not_retried(dash: FakeDashboard,
                                                                        client: RayDashboardClient) -> None:
    dash.on("POST /api/jobs/nope/stop", (404, "Job nope does not exist"))
    with pytest.raises(CommandFailed) as info:
        await client.stop_job("nope")
    err = info.value
    assert err.command == ("POST", f"{dash.url}/api/jobs/nope/stop")
    assert "HTTP 404" in str(err) and err.stderr_tail == "Job nope does not exist"
    assert dash.count("POST /api/jobs/nope/stop") == 1


async def test_a_long_5xx_traceback_keeps_its_last_lines(dash: FakeDashboard, client: RayDashboardClient) -> None:
    trace = "Traceback (most recent call last):\n" + "  File x, line 1\n" * 200 + "RuntimeError: the GCS is gone"
    dash.on("GET /api/serve/applications/", (500, trace))
    with pytest.raises(CommandFailed) as info:
        await client.serve_details()
    assert info.value.stderr_tail.endswith("RuntimeError: the GCS is gone")
    assert len(info.value.stderr_tail) <= 601 and info.value.stderr_tail.startswith("…")
    assert dash.count("GET /api/serve/applications/") == 3


async def test_an_answer_that_is_not_json_is_refused(dash: FakeDashboard, client: RayDashboardClient) -> None:
    dash.on("GET /api/jobs/", (200, "<html>a proxy's login page</html>"))
    with pytest.raises(CommandFailed, match="not JSON"):
        await client.list_jobs()
    dash.on("GET /api/jobs/", (200, {"jobs": []}))
    with pytest.raises(CommandFailed, match="a JSON list of jobs"):
        await client.list_jobs()


async def test_a_missing_job_is_none(dash: FakeDashboard, client: RayDashboardClient) -> None:
    dash.on("GET /api/jobs/gone", (404, "Job gone does not exist"))
    dash.on("GET /api/jobs/t1", (200, JOBS[2]))
    assert await client.get_job("gone") is None
    t1 = await client.get_job("t1")
    assert t1 is not None and t1.status == "STOPPED" and t1.terminal


# ----------------------------------------------------------------------------- idempotent submission


SPEC = JobSpec("python job.py", "train-a-dcflex-0123abcd", {"working_dir": "gcs://_ray_pkg_x.zip"},
               {"dcflex.tier": "flex-25"}, entrypoint_num_cpus=0.5, entrypoint_resources={"dcflex_test_gpu": 1.0})


async def test_submit_sends_the_job_submit_request(dash: FakeDashboard, client: RayDashboardClient) -> None:
    dash.on("POST /api/jobs/", (200, {"job_id": SPEC.submission_id, "submission_id": SPEC.submission_id}))
    assert await client.submit_job(SPEC) == SPEC.submission_id
    sent = json.loads(dash.seen[0][2])
    assert sent == {"entrypoint": "python job.py", "submission_id": "train-a-dcflex-0123abcd",
                    "runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}, "metadata": {"dcflex.tier": "flex-25"},
                    "entrypoint_num_cpus": 0.5, "entrypoint_resources": {"dcflex_test_gpu": 1.0}}


async def test_submit_that_already_landed_is_not_repeated(dash: FakeDashboard, client: RayDashboardClient) -> None:
    exists = "ValueError: Job with submission_id train-a-dcflex-0123abcd already exists. Please use a different one."
    dash.on("POST /api/jobs/", (500, exists))
    dash.on(f"GET /api/jobs/{SPEC.submission_id}", (200, {**JOBS[0], "submission_id": SPEC.submission_id}))
    assert await client.submit_job(SPEC) == SPEC.submission_id
    assert dash.count("POST /api/jobs/") == 1


async def test_submit_whose_answer_was_lost_is_checked_not_repeated(dash: FakeDashboard) -> None:
    dash.on("POST /api/jobs/", HANG)
    dash.on(f"GET /api/jobs/{SPEC.submission_id}", (200, {**JOBS[0], "submission_id": SPEC.submission_id}))
    async with RayDashboardClient(dash.url, timeout_s=0.3, retries=2, backoff_s=0.01) as c:
        assert await c.submit_job(SPEC) == SPEC.submission_id
    assert dash.count("POST /api/jobs/") == 1  # a POST that timed out is not sent again blindly


async def test_submit_that_did_not_land_is_retried(dash: FakeDashboard, client: RayDashboardClient) -> None:
    dash.on("POST /api/jobs/", (500, "No available agent to submit job, please try again later."),
            (200, {"job_id": None, "submission_id": SPEC.submission_id}))
    dash.on(f"GET /api/jobs/{SPEC.submission_id}", (404, "does not exist"))
    assert await client.submit_job(SPEC) == SPEC.submission_id
    assert dash.count("POST /api/jobs/") == 2 and dash.count(f"GET /api/jobs/{SPEC.submission_id}") == 1


async def test_a_refused_submission_fails_with_rays_reason(dash: FakeDashboard, client: RayDashboardClient) -> None:
    dash.on("POST /api/jobs/", (400, "TypeError: entrypoint must be a string"))
    with pytest.raises(CommandFailed) as info:
        await client.submit_job(SPEC)
    assert info.value.stderr_tail == "TypeError: entrypoint must be a string"
    assert dash.count("POST /api/jobs/") == 1


async def test_dry_run_sends_nothing_that_changes_the_cluster(dash: FakeDashboard) -> None:
    async with RayDashboardClient(dash.url, dry_run=True) as c:
        assert await c.submit_job(SPEC) == SPEC.submission_id
        await c.stop_job("train-a")
    assert dash.seen == []
    assert [(m, u.removeprefix(dash.url)) for m, u, _ in c.sent] == [("POST", "/api/jobs/"),
                                                                    ("POST", "/api/jobs/train-a/stop")]


# ------------------------------------------------------------------------------------- packages


async def test_working_dir_is_zipped_reproducibly_and_uploaded_once(dash: FakeDashboard, client: RayDashboardClient,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("print('hi')\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "util.py").write_text("X = 1\n")
    uri = await client.upload_working_dir(tmp_path)
    assert uri.startswith("gcs://_ray_pkg_") and uri.endswith(".zip")
    again = await client.upload_working_dir(tmp_path)
    assert again == uri
    assert [m for m, _, _ in dash.seen] == ["GET", "PUT", "GET"]
    with zipfile.ZipFile(BytesIO(dash.seen[1][2])) as zf:
        assert sorted(zf.namelist()) == ["job.py", "lib/util.py"]
        assert zf.read("lib/util.py") == b"X = 1\n"
    assert await client.package_exists(uri) and not await client.package_exists("gcs://_ray_pkg_other.zip")


async def test_a_large_working_dir_is_refused(client: RayDashboardClient, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 2048)
    with pytest.raises(CommandFailed, match="a small directory of its own"):
        await client.upload_working_dir(tmp_path, max_bytes=1024)


# ---------------------------------------------------------------------------------------- Serve


def test_serve_details_parse_the_captured_answer() -> None:
    inst = ServeInstance.from_json(SERVE)
    echo = inst.apps["echo"]
    assert echo.status == "RUNNING" and echo.source == "declarative" and echo.config is not None
    dep = echo.deployments["Echo"]
    assert (dep.target_num_replicas, dep.running_replicas, dep.autoscaling) == (3, 3, False)
    assert inst.http_options is not None and inst.http_options["port"] == 18267


def test_serve_config_changes_one_deployment_and_carries_the_rest() -> None:
    two = json.loads(json.dumps(SERVE))
    other = json.loads(json.dumps(two["applications"]["echo"]))
    other["name"] = other["deployed_app_config"]["name"] = "other"
    two["applications"]["other"] = other
    two["target_capacity"] = 80.0
    inst = ServeInstance.from_json(two)
    config = serve_config_with(inst, "echo", "Echo", 1)
    assert config is not None
    by_name = {a["name"]: a for a in config["applications"]}
    assert by_name["echo"]["deployments"] == [{"name": "Echo", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}]
    assert by_name["other"] == other["deployed_app_config"]  # untouched, but sent: a PUT without it deletes it
    assert config["http_options"]["port"] == 18267 and config["proxy_location"] == "EveryNode"
    assert config["target_capacity"] == 80.0
    assert serve_config_with(inst, "echo", "Echo", 3) is None  # already the target: nothing to send


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: None, "no application 'nope'"),
    (lambda d: d["applications"]["echo"]["deployments"]["Echo"]["deployment_config"].update(
        autoscaling_config={"min_replicas": 1, "max_replicas": 5}), "autoscales"),
    (lambda d: d["applications"]["echo"].update(deployed_app_config=None, source="imperative"), "serve.run"),
])
def test_serve_config_refuses_what_the_rest_api_cannot_do(change: Any, why: str) -> None:
    details = json.loads(json.dumps(SERVE))
    change(details)
    app = "nope" if "nope" in why else "echo"
    with pytest.raises(CommandFailed, match=why):
        serve_config_with(ServeInstance.from_json(details), app, "Echo", 1)


async def test_scale_serve_puts_the_modified_config(dash: FakeDashboard, client: RayDashboardClient) -> None:
    dash.on("GET /api/serve/applications/", (200, SERVE))
    dash.on("PUT /api/serve/applications/", (200, ""))
    sent = await client.scale_serve("echo", "Echo", 1)
    assert sent is not None and json.loads(dash.seen[-1][2]) == sent
    assert await client.scale_serve("echo", "Echo", 3) is None
    assert dash.count("PUT /api/serve/applications/") == 1


def test_entrypoint_resources_survive_through_metadata() -> None:
    """Ray does not report entrypoint resources back; the metadata key carries them to a resubmission."""
    raw = {**JOBS[0], "metadata": {**JOBS[0]["metadata"], KEY_ENTRYPOINT: SPEC.entrypoint_json()}}
    job = RayJob.from_json(raw)
    assert job.entrypoint_num_cpus == 0.5 and job.entrypoint_resources == {"dcflex_test_gpu": 1.0}
    assert job.spec().to_json()["entrypoint_resources"] == {"dcflex_test_gpu": 1.0}
