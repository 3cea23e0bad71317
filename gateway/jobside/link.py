"""The job-side helper's wire: settings from the environment, the directive's shape, and HTTP.

Split from ``gateway.jobside`` (which holds the helper's state and its background thread) so each
stays readable; like it, standard library only, and urllib is imported on the first request rather
than at import, so ``import gateway.jobside`` stays cheap in a training script's start-up.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Directive", "GatewayLink", "Settings", "parse_directive", "settings_from_env"]

log = logging.getLogger("dcflex.jobside")

ENV_URL, ENV_JOB_ID, ENV_SLURM_JOB_ID = "DCFLEX_GATEWAY_URL", "DCFLEX_JOB_ID", "SLURM_JOB_ID"
ENV_RESUME, ENV_POLL, ENV_EXIT_FLUSH = "DCFLEX_RESUME_FROM", "DCFLEX_POLL_S", "DCFLEX_EXIT_FLUSH_S"
DEFAULT_POLL_S = 5.0
DEFAULT_EXIT_FLUSH_S = 5.0
MAX_TIMEOUT_S = 2.0
JOB_ID = re.compile(r"^[A-Za-z0-9_.+:-]{1,128}$")  # the gateway's own rule (gateway/api/server.py)
_MAX_ANSWER = 64 * 1024


@dataclass(frozen=True, slots=True)
class Directive:
    """What the job is asked to do. ``source`` is "gateway" (polled; ``seq`` from the gateway, greater
    for each new request) or "signal" (a local signal; ``seq`` counts signals, ``deadline`` None)."""

    job_id: str
    seq: int
    kind: str
    event_id: str
    deadline: datetime | None
    stop_after: bool
    source: str = "gateway"


@dataclass(frozen=True, slots=True)
class Settings:
    gateway_url: str | None
    job_id: str | None
    resume_from: str | None
    poll_s: float
    exit_flush_s: float


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Read what the adapter set on submission; a malformed number falls back to its default (logged)."""
    return Settings(
        gateway_url=env.get(ENV_URL) or None,
        job_id=env.get(ENV_JOB_ID) or slurm_job_id(env),
        resume_from=env.get(ENV_RESUME) or None,
        poll_s=_number(env, ENV_POLL, DEFAULT_POLL_S),
        exit_flush_s=_number(env, ENV_EXIT_FLUSH, DEFAULT_EXIT_FLUSH_S),
    )


def slurm_job_id(env: Mapping[str, str]) -> str | None:
    """Slurm's id for this job as squeue and the Slurm adapter write it (``123_4`` for an array task)."""
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env.get(ENV_SLURM_JOB_ID) or None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        log.warning("dcflex: %s=%r is not a number >= 0; using %g", name, text, default)
        return default
    return value


def config_problem(gateway_url: str | None, job_id: str | None) -> str | None:
    """Why the helper cannot talk to the gateway, or None when it can."""
    if gateway_url is None:
        return f"no gateway configured ({ENV_URL} is not set)"
    if not gateway_url.startswith(("http://", "https://")):
        return f"gateway URL {gateway_url!r} must start with http:// or https://"
    if job_id is None:
        return f"no job id ({ENV_JOB_ID} and {ENV_SLURM_JOB_ID} are not set)"
    if not JOB_ID.match(job_id):
        return f"job id {job_id!r} is not one the gateway accepts (letters, digits, _.+:- only)"
    return None


def parse_directive(body: bytes, job_id: str) -> Directive:
    """The body of ``GET /v1/jobs/{id}/directive`` (200); raises ValueError when it is not one."""
    try:
        raw = json.loads(body)
        deadline = datetime.fromisoformat(raw["deadline"]) if raw.get("deadline") else None
        return Directive(str(raw.get("job_id", job_id)), int(raw["seq"]), str(raw.get("kind", "checkpoint")),
                         str(raw.get("event_id", "")), deadline, bool(raw.get("stop_after", True)))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a directive ({exc}): {body[:200]!r}") from exc


class GatewayLink:
    """Requests to one job's endpoints. ``request`` answers ``(status, body)`` or None when the gateway
    cannot be reached or fails (5xx); an outage is logged once, and its end once."""

    def __init__(self, gateway_url: str, job_id: str, timeout_s: float = MAX_TIMEOUT_S) -> None:
        self.gateway_url = gateway_url
        self.job_id = job_id
        self.timeout_s = min(MAX_TIMEOUT_S, max(0.05, timeout_s))
        self.reachable: bool | None = None
        self._opener: Any = None
        self._refusals_said: set[tuple[str, int]] = set()

    def request(self, method: str, what: str, body: dict[str, Any] | None = None) -> tuple[int, bytes] | None:
        import http.client
        import urllib.error
        import urllib.parse
        import urllib.request

        if self._opener is None:
            # No proxies: the gateway is on the cluster's own network, and a proxy set in the job's
            # environment for downloads (http_proxy) would only add a hop that may not reach it.
            self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"{self.gateway_url}/v1/jobs/{urllib.parse.quote(self.job_id, safe='')}/{what}"
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout_s) as response:
                status, payload = int(response.status), bytes(response.read(_MAX_ANSWER))
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, (exc.read(_MAX_ANSWER) if exc.fp is not None else b"")
            exc.close()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            self._outage(str(getattr(exc, "reason", exc)))
            return None
        if status >= 500:
            self._outage(f"HTTP {status}: {payload[:200]!r}")
            return None
        if self.reachable is False:
            log.info("dcflex: the gateway at %s is reachable again", self.gateway_url)
        self.reachable = True
        return status, payload

    def post(self, what: str, body: dict[str, Any], name: str, *, refusal_once: bool = False) -> bool:
        """True when the gateway took it, or refused it for good (a 4xx other than 408/429: sending the
        same again cannot help, so it is dropped with a warning, only the first time if ``refusal_once``:
        an ETA is frequent, and a gateway without that endpoint refuses every one)."""
        answer = self.request("POST", what, body)
        if answer is None:
            return False
        status, text = answer
        if status < 300:
            return True
        if 400 <= status < 500 and status not in (408, 429):
            if not refusal_once or (what, status) not in self._refusals_said:
                self._refusals_said.add((what, status))
                log.warning("dcflex: the gateway refused the %s (HTTP %s): %r", name, status, text[:300])
            return True
        return False

    def _outage(self, reason: str) -> None:
        if self.reachable is not False:
            log.warning("dcflex: cannot reach the gateway at %s (%s); training continues, retrying in the background",
                        self.gateway_url, reason)
        self.reachable = False
