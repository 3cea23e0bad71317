"""``RayDashboardClient``: Ray's dashboard REST APIs (Jobs, packages, Serve) over aiohttp.

The gateway never imports ``ray``: everything it does to a Ray cluster is one of these HTTP calls, with the
shapes of Ray 2.60 (``ray/dashboard/modules/job/job_head.py``, ``.../serve/serve_head.py``):

- ``GET /api/version``, ``GET /api/jobs/``, ``GET /api/jobs/{id}`` (404: no such job),
  ``POST /api/jobs/`` (``JobSubmitRequest`` → ``{"submission_id": ...}``), ``POST /api/jobs/{id}/stop``
  (→ ``{"stopped": bool}``), ``GET /api/jobs/{id}/logs`` (→ ``{"logs": str}``);
- ``GET``/``PUT /api/packages/gcs/{name}``: a job's ``working_dir`` must be a URI for a job submitted over
  REST (a local path fails at start-up), so a small directory is zipped and uploaded as ``gcs://_ray_pkg_<sha1>.zip``,
  as ``ray job submit --working-dir`` does; a ``GET`` also pins the package in the GCS for a while (Ray's
  ``RAY_RUNTIME_ENV_TEMPORARY_REFERENCE_EXPIRATION_S``, 10 min by default);
- ``GET /api/serve/applications/`` (``ServeInstanceDetails``), ``PUT /api/serve/applications/`` (the whole
  declarative ``ServeDeploySchema``: applications left out are deleted), ``DELETE`` (shuts Serve down).

Errors, in one place: a refused or failed connection is retried with exponential backoff (nothing was
sent), then ``AdapterUnavailable``; a timeout (``timeout_s`` per attempt) or a 5xx answer is retried for
requests that are safe to repeat, then ``AdapterTimeout`` / ``AdapterUnavailable`` (502, 503, 504) /
``CommandFailed`` (other 5xx); a 4xx is ``CommandFailed`` at once. Every error names the method and URL
(``command``), the HTTP status and the tail of the body (Ray answers failures with a traceback, whose
last lines say what went wrong). A job submission is repeated only when it cannot have landed, or when
``GET`` shows that it did not: submitting twice would start two jobs.

With ``dry_run``, requests that change something are recorded in ``sent`` and logged, not sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from adapters.ray.model import JobSpec, RayJob, ServeInstance
from adapters.ray.serve import refuse_imperative, serve_config, serve_config_with
from gateway.exceptions import AdapterError, AdapterTimeout, AdapterUnavailable, CommandFailed

__all__ = ["MAX_PACKAGE_BYTES", "RayDashboardClient", "Reply", "serve_config_with", "status_error"]

log = logging.getLogger("dcflex.adapters.ray")

_ADAPTER = "ray"
_TAIL = 600
MAX_PACKAGE_BYTES = 100 * 1024 * 1024
_USER_AGENT = "dcflex-gateway (aiohttp)"  # not "Mozilla...": Ray redacts runtime envs for browsers


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    text: str

    def json(self, method: str, url: str) -> Any:
        try:
            return json.loads(self.text) if self.text else None
        except ValueError:
            raise CommandFailed(f"ray: {method} {url} answered HTTP {self.status} with a body that is not JSON",
                                adapter=_ADAPTER, command=(method, url), stderr_tail=_tail(self.text)) from None


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TAIL else "…" + text[-_TAIL:]


class RayDashboardClient:
    """One Ray cluster's dashboard (see the module docstring); an async context manager."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, retries: int = 3, backoff_s: float = 0.5,
                 max_backoff_s: float = 10.0, dry_run: bool = False, session: aiohttp.ClientSession | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the Ray dashboard URL must start with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.dry_run = dry_run
        self.sent: list[tuple[str, str, Any]] = []  # dry-run: what would have been sent
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> RayDashboardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()
        if self._own_session:
            self._session = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": _USER_AGENT})
            self._own_session = True
        return self._session

    # ------------------------------------------------------------------------------- transport

    async def request(self, method: str, path: str, *, body: Any = None, data: bytes | None = None,
                      ok: Collection[int] = (200,), idempotent: bool = True) -> Reply:
        """One call with the retry policy of the module docstring; statuses in ``ok`` are returned."""
        url = self.url(path)
        if self.dry_run and method != "GET":
            self.sent.append((method, url, body if data is None else f"<{len(data)} bytes>"))
            log.info("dry-run: %s %s %s", method, url, json.dumps(body) if body is not None else "")
            return Reply(200, "")
        attempt = 0
        while True:
            got = await self._attempt(method, url, body, data, ok, idempotent)
            if isinstance(got, Reply):
                return got
            err, retry = got
            attempt += 1
            if attempt > self.retries or not retry:
                raise err
            delay = self._backoff(attempt)
            log.warning("%s (attempt %d of %d); retrying in %.1f s", err, attempt, self.retries + 1, delay)
            await asyncio.sleep(delay)  # wall time: the dashboard recovers in wall time, whatever the clock

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1)))

    async def _attempt(self, method: str, url: str, body: Any, data: bytes | None, ok: Collection[int],
                       idempotent: bool) -> Reply | tuple[AdapterError, bool]:
        """The reply, or the error to raise and whether another attempt may cure it."""
        command = (method, url)
        payload = json.dumps(body).encode() if body is not None else data
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._http().request(method, url, data=payload, headers=headers) as resp:
                    reply = Reply(resp.status, await resp.text(errors="replace"))
        except TimeoutError:
            return AdapterTimeout(f"ray: {method} {url} did not answer", adapter=_ADAPTER, command=command,
                                  timeout_s=self.timeout_s), idempotent
        except aiohttp.ClientConnectorError as exc:  # nothing was sent: always safe to try again
            return AdapterUnavailable(f"ray: cannot reach the dashboard for {method} {url}: {exc.os_error or exc}",
                                      adapter=_ADAPTER, command=command), True
        except (aiohttp.ClientError, OSError) as exc:
            return AdapterUnavailable(f"ray: {method} {url} failed: {type(exc).__name__}: {exc}",
                                      adapter=_ADAPTER, command=command), idempotent
        if reply.status in ok:
            return reply
        return status_error(method, url, reply), idempotent and reply.status >= 500

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        reply = await self.request(method, path, **kw)
        return reply.json(method, self.url(path))

    # ------------------------------------------------------------------------------------ Jobs

    async def version(self) -> dict[str, Any]:
        got = await self._json("GET", "/api/version")
        return got if isinstance(got, dict) else {}

    async def list_jobs(self) -> list[RayJob]:
        raw = await self._json("GET", "/api/jobs/")
        if not isinstance(raw, list):
            raise self._bad_shape("GET", "/api/jobs/", "a JSON list of jobs")
        return [self._job(j, "/api/jobs/") for j in raw]

    async def get_job(self, submission_id: str) -> RayJob | None:
        path = f"/api/jobs/{_seg(submission_id)}"
        reply = await self.request("GET", path, ok=(200, 404))
        return None if reply.status == 404 else self._job(reply.json("GET", self.url(path)), path)

    async def submit_job(self, spec: JobSpec) -> str:
        """Submit ``spec``; with a ``submission_id`` it is idempotent (an existing job of that id is kept)."""
        path = "/api/jobs/"
        url = self.url(path)
        sid = spec.submission_id
        attempt = 0
        while True:
            try:
                reply = await self.request("POST", path, body=spec.to_json(), ok=(200, *_TRANSIENT_5XX),
                                           idempotent=False)
            except (AdapterTimeout, AdapterUnavailable) as exc:  # it may have landed before the failure
                if sid is None:
                    raise
                failure: AdapterError = exc
            else:
                if reply.status == 200:
                    if self.dry_run:
                        return sid or "<new submission id>"
                    got = reply.json("POST", url)
                    new = got.get("submission_id") if isinstance(got, dict) else None
                    if not isinstance(new, str) or not new:
                        raise self._bad_shape("POST", path, 'a JSON object with "submission_id"')
                    return new
                # Ray answers 500 both for "a job with this submission_id already exists" (an earlier
                # attempt landed, or a resubmission raced) and for transient trouble ("no available agent").
                failure = status_error("POST", url, reply)
                if sid is None:
                    raise failure
            if await self.get_job(sid) is not None:
                log.info("submit %s: Ray already has it (%s)", sid, failure)
                return sid
            attempt += 1
            if attempt > self.retries:
                raise failure
            log.warning("%s (attempt %d of %d); retrying in %.1f s", failure, attempt, self.retries + 1,
                        self._backoff(attempt))
            await asyncio.sleep(self._backoff(attempt))

    async def stop_job(self, submission_id: str) -> bool:
        """Ask Ray to stop the job (SIGTERM to its entrypoint, SIGKILL a few seconds later); False when
        it had already ended."""
        path = f"/api/jobs/{_seg(submission_id)}/stop"
        got = await self._json("POST", path)
        return bool(got.get("stopped")) if isinstance(got, dict) else True

    async def job_logs(self, submission_id: str) -> str:
        path = f"/api/jobs/{_seg(submission_id)}/logs"
        got = await self._json("GET", path)
        return str(got.get("logs", "")) if isinstance(got, dict) else ""

    # -------------------------------------------------------------------------------- packages

    async def package_exists(self, uri: str) -> bool:
        """Whether a ``gcs://`` package is still in the GCS (the call also pins it for a while)."""
        path = _package_path(uri)
        return (await self.request("GET", path, ok=(200, 404))).status == 200

    async def upload_working_dir(self, directory: str | os.PathLike[str], *, max_bytes: int = MAX_PACKAGE_BYTES) -> str:
        """Zip a small directory and upload it once; the ``gcs://`` URI to use as ``working_dir``."""
        data = await asyncio.to_thread(_zip_dir, Path(directory), max_bytes)
        uri = f"gcs://_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip"
        if not await self.package_exists(uri):
            await self.request("PUT", _package_path(uri), data=data)
        return uri

    # ----------------------------------------------------------------------------------- Serve

    async def serve_details(self) -> ServeInstance:
        path = "/api/serve/applications/"
        raw = await self._json("GET", path)
        try:
            return ServeInstance.from_json(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._bad_shape("GET", path, f"Serve instance details ({exc})") from None

    async def putserve_config(self, config: dict[str, Any]) -> None:
        """Deploy the whole declarative config (every application; those left out are deleted)."""
        await self.request("PUT", "/api/serve/applications/", body=config)

    async def delete_serve(self) -> None:
        """Shut Serve down with every application (tests clean up with it)."""
        await self.request("DELETE", "/api/serve/applications/")

    async def deploy_serve_app(self, app_config: dict[str, Any], *,
                               http_options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add (or replace, by name) one application, keeping the others: the PUT carries them all.
        ``http_options`` apply only when Serve is not running yet (they cannot change while it runs)."""
        instance = await self.serve_details()
        name = str(app_config.get("name"))
        refuse_imperative(instance, f"deploy Serve application {name!r}", self.url("/api/serve/applications/"),
                           keep=name)
        others = [a.config for a in instance.apps.values() if a.name != name and a.config is not None]
        config = serve_config(instance, [*others, app_config])
        if instance.http_options is None and http_options is not None:
            config["http_options"] = dict(http_options)
        await self.putserve_config(config)
        return config

    async def remove_serve_app(self, name: str) -> bool:
        """Delete one application, keeping the others; when it was the last, shut Serve down (its controller
        and proxy go too). False when there was no such application."""
        instance = await self.serve_details()
        if name not in instance.apps:
            return False
        rest = [a.config for a in instance.apps.values() if a.name != name and a.config is not None]
        if not rest and len(instance.apps) == 1:
            await self.delete_serve()
            return True
        refuse_imperative(instance, f"remove Serve application {name!r}", self.url("/api/serve/applications/"), keep=name)
        await self.putserve_config(serve_config(instance, rest))
        return True

    async def scale_serve(self, app: str, deployment: str, replicas: int) -> dict[str, Any] | None:
        """Set one deployment's ``num_replicas`` by re-deploying the current declarative config with that
        one number changed; None when it already has that target (nothing sent)."""
        instance = await self.serve_details()
        config = serve_config_with(instance, app, deployment, replicas, url=self.url("/api/serve/applications/"))
        if config is None:
            return None
        await self.putserve_config(config)
        return config

    # --------------------------------------------------------------------------------- helpers

    def _job(self, raw: object, path: str) -> RayJob:
        try:
            return RayJob.from_json(raw)
        except ValueError as exc:
            raise self._bad_shape("GET", path, f"a Ray job ({exc})") from None

    def _bad_shape(self, method: str, path: str, expected: str) -> CommandFailed:
        return CommandFailed(f"ray: {method} {self.url(path)} did not answer with {expected}; is it a Ray dashboard?",
                             adapter=_ADAPTER, command=(method, self.url(path)))


_TRANSIENT_5XX = (500, 502, 503, 504)


def status_error(method: str, url: str, reply: Reply) -> AdapterError:
    """The error for an answer that is not a success: 502/503/504 say the service is (for now) not there,
    anything else that the request failed."""
    what = f"ray: {method} {url} answered HTTP {reply.status}"
    if reply.status in (502, 503, 504):
        return AdapterUnavailable(f"{what}: {_tail(reply.text)}", adapter=_ADAPTER, command=(method, url))
    return CommandFailed(what, adapter=_ADAPTER, command=(method, url), stderr_tail=_tail(reply.text))


def _seg(value: str) -> str:
    """One path segment, escaped (a submission id is the user's choice)."""
    return quote(value, safe="")


def _package_path(uri: str) -> str:
    protocol, sep, name = uri.partition("://")
    if not sep or not name or "/" in name:
        raise ValueError(f"not a package URI like gcs://_ray_pkg_<hash>.zip: {uri!r}")
    return f"/api/packages/{_seg(protocol)}/{_seg(name)}"


def _zip_dir(directory: Path, max_bytes: int) -> bytes:
    """A reproducible zip of ``directory`` (sorted, fixed timestamps): the same files give the same URI."""
    if not directory.is_dir():
        raise CommandFailed(f"ray: working_dir {directory} is not a directory", adapter=_ADAPTER)
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    if total > max_bytes:
        raise CommandFailed(f"ray: working_dir {directory} holds {total} bytes, more than {max_bytes}: give a job a "
                            "small directory of its own", adapter=_ADAPTER)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            info = zipfile.ZipInfo(p.relative_to(directory).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (p.stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, p.read_bytes())
    return buf.getvalue()
