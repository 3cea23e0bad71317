"""Running Slurm's client commands: exec'd (never through a shell), bounded, retried when transient.

Why each rule:

- **No shell, validated arguments.** Job ids, node names, signal names and watts come from squeue
  output, configuration and job comments that users write; each is checked against a strict pattern
  before it becomes an argument (``valid_job_id`` and friends), so nothing a user types is ever
  interpreted as an option or a second command.
- **A timeout per command, and the whole process group killed on expiry.** A hung ``srun`` or
  ``scontrol`` may have children (``srun`` spawns helpers, a power-cap template may be a script);
  each command runs in its own session so ``killpg`` takes all of them. A timeout is raised as
  ``AdapterTimeout`` and *not* retried here: a command that hung may have taken effect, and the
  caller (``GuardedScheduler``) decides whether to repeat the whole, idempotent, action.
- **Retries only for what is transient.** Slurm's clients exit 1 with "Unable to contact slurm
  controller", "Socket timed out", "Connection refused"... while the controller restarts or fails
  over; those are retried with exponential backoff and end as ``AdapterUnavailable``. Slurm 22.05's
  ``squeue --json``/``sinfo --json`` exit 0 even then, with an ``errors`` list and no data, so a
  read-only command's output is checked for that too (and treated the same). Any other failure is a definite answer
  (``CommandFailed`` with the exit code and the tail of stderr) and is not repeated.
- **Dry-run at this level too.** With ``dry_run`` the runner records a changing command's argv in
  ``planned`` and returns success without running it; read-only commands still run, so a dry-run
  gateway plans from the real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shlex
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from adapters.slurm.tiers import ALLOWED_SIGNALS
from gateway.exceptions import AdapterTimeout, AdapterUnavailable, CommandFailed

__all__ = [
    "ALLOWED_SIGNALS", "CommandResult", "CommandRunner", "is_transient", "valid_job_id", "valid_node",
    "valid_signal", "valid_watts",
]

log = logging.getLogger("dcflex.adapters.slurm")

_JOB_ID = re.compile(r"^\d+(_\d+)?(\+\d+)?$")
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # no leading "-": never an option
_TRANSIENT = re.compile(
    "|".join(re.escape(m) for m in (
        "Unable to contact slurm controller",
        "Socket timed out",
        "Connection refused",
        "Connection reset by peer",
        "Zero Bytes were transmitted or received",
        "Unexpected message received",  # 22.05 scontrol's words for a failed connection to the controller
        "Resource temporarily unavailable",
        "Transport endpoint is not connected",
        "backup controller in standby mode",
        "Munge encode failed",
        "Failed while looking for",  # squeue/sinfo --json: could not load jobs/nodes from the controller
        "Unable to establish",
    )),
    re.IGNORECASE,
)
_TAIL = 600
_JSON_CHECK_MAX = 256 * 1024  # a failed squeue/sinfo --json is small; a large answer carries data


def _refuse(what: str) -> CommandFailed:
    return CommandFailed(f"refused before running anything: {what}", adapter="slurm")


def valid_job_id(job_id: str) -> str:
    """``123``, ``123_4`` (array task) or ``123+1`` (hetjob component); anything else is refused."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise _refuse(f"{job_id!r} is not a Slurm job id (123, 123_4 or 123+1)")
    return job_id


def valid_node(name: str) -> str:
    if not isinstance(name, str) or not _NODE.match(name):
        raise _refuse(f"{name!r} is not a node name (letters, digits, '.', '_', '-'; not starting with '-')")
    return name


def valid_signal(name: str) -> str:
    sig = name.upper().removeprefix("SIG") if isinstance(name, str) else ""
    if sig not in ALLOWED_SIGNALS:
        raise _refuse(f"signal {name!r} is not allowed (allowed: {', '.join(sorted(ALLOWED_SIGNALS))})")
    return sig


def valid_watts(watts: float) -> float:
    if isinstance(watts, bool) or not isinstance(watts, int | float) or not math.isfinite(watts) or watts <= 0:
        raise _refuse(f"power limit {watts!r} is not a finite positive number of watts")
    return float(watts)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command did; ``dry_run`` results were never run (exit code 0, no output)."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes = b""
    stderr: str = ""
    attempts: int = 1
    duration_s: float = 0.0
    dry_run: bool = False

    @property
    def line(self) -> str:
        return shlex.join(self.argv)


def is_transient(exit_code: int, stderr: str) -> bool:
    """Whether a failure means "Slurm could not be reached" (retry) rather than "Slurm said no"."""
    return exit_code != 0 and bool(_TRANSIENT.search(stderr))


def _json_failure(stdout: bytes, keys: Collection[str] = ("jobs", "nodes", "sinfo")) -> str | None:
    """Slurm's reason when a ``--json`` document reports errors and carries no data, else None."""
    if len(stdout) > _JSON_CHECK_MAX or b'"errors"' not in stdout:
        return None
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None  # the parser reports malformed JSON with its position
    if not isinstance(doc, dict):
        return None
    errors = doc.get("errors")
    if not isinstance(errors, list) or not errors:
        return None
    if any(isinstance(doc.get(k), list) and doc[k] for k in keys):
        return None  # errors alongside data: a warning, the parser logs it
    texts = []
    for e in errors:
        if isinstance(e, dict):
            text = " ".join(str(e[k]) for k in ("source", "description", "error") if e.get(k)) or str(e)
            code = e.get("error_number", e.get("errno"))
            texts.append(f"{text} (error {code})" if code not in (None, 0) else text)
        else:
            texts.append(str(e))
    return "; ".join(texts)


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TAIL else "…" + text[-_TAIL:]


class CommandRunner:
    """Runs argv lists for the Slurm adapter; see the module docstring for the rules.

    ``env`` is laid over the process environment (tests point ``SLURM_CONF`` at their Slurm with
    it). ``history`` keeps the last commands run (and planned, in dry-run) for operators and tests.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        dry_run: bool = False,
        env: Mapping[str, str] | None = None,
        adapter: str = "slurm",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError("timeout_s must be a positive number")
        if retries < 0 or not (math.isfinite(backoff_s) and backoff_s >= 0):
            raise ValueError("retries and backoff_s must be >= 0")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.dry_run = dry_run
        self.adapter = adapter
        self._env = {**os.environ, **env} if env else None
        self._sleep = sleep
        self.planned: list[tuple[str, ...]] = []
        self.history: deque[CommandResult] = deque(maxlen=500)

    async def run(
        self,
        argv: Sequence[str],
        *,
        readonly: bool = False,
        timeout_s: float | None = None,
        ok_if: Iterable[str] = (),
    ) -> CommandResult:
        """Run ``argv``; return its result when it exits 0 (or its stderr contains one of ``ok_if``:
        Slurm's words for "already in that state", e.g. "Job is not suspended" for a resume).

        Raises ``AdapterTimeout`` (not retried), ``AdapterUnavailable`` (after the retries, or when
        the program cannot be started) or ``CommandFailed``.
        """
        args = self._check(argv)
        if self.dry_run and not readonly:
            self.planned.append(args)
            result = CommandResult(args, 0, dry_run=True)
            self.history.append(result)
            log.info("dry-run: would run %s", result.line)
            return result
        limit = self.timeout_s if timeout_s is None else timeout_s
        accepted = tuple(ok_if)
        attempt = 0
        while True:
            attempt += 1
            result = await self._once(args, limit, attempt)
            self.history.append(result)
            if result.exit_code == 0:
                reason = _json_failure(result.stdout) if readonly else None
                if reason is None:
                    return result
                # 22.05 answers so when slurmctld is down ("Failed while looking for jobs" from squeue, a bare
                # "Unspecified error" from sinfo): a cluster always has nodes, so no data means no answer.
                transient, detail = True, f"Slurm reported: {reason}"
            elif accepted and any(a in result.stderr for a in accepted):
                log.info("%s: %s (already so; nothing to do)", result.line, _tail(result.stderr))
                return result
            else:
                transient, detail = is_transient(result.exit_code, result.stderr), _tail(result.stderr)
            if not transient:
                raise CommandFailed(f"{self.adapter}: `{result.line}` failed", adapter=self.adapter, command=args,
                                    exit_code=result.exit_code, stderr_tail=detail)
            if attempt > self.retries:
                raise AdapterUnavailable(
                    f"{self.adapter}: cannot reach the Slurm controller: `{result.line}` failed {attempt} time(s), "
                    f"last with exit code {result.exit_code}: {detail or '(no error text)'}; "
                    "check that slurmctld runs (`scontrol ping`) and that munge works",
                    adapter=self.adapter, command=args,
                )
            delay = self.backoff_s * 2 ** (attempt - 1)
            log.warning("%s: Slurm unreachable (%s); retry %d of %d in %.1f s", result.line, detail, attempt,
                        self.retries, delay)
            await self._sleep(delay)

    def _check(self, argv: Sequence[str]) -> tuple[str, ...]:
        args = tuple(argv)
        if not args or not args[0]:
            raise _refuse("empty command")
        for a in args:
            if not isinstance(a, str) or "\x00" in a:
                raise _refuse(f"argument {a!r} of {args[0]} is not a plain string")
        return args

    async def _once(self, args: tuple[str, ...], limit: float, attempt: int) -> CommandResult:
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self._env, start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise AdapterUnavailable(
                f"{self.adapter}: cannot run {args[0]!r}: no such program (give its absolute path in "
                "[scheduler.slurm], or install Slurm's client commands)", adapter=self.adapter, command=args,
            ) from exc
        except PermissionError as exc:
            raise AdapterUnavailable(f"{self.adapter}: cannot run {args[0]!r}: permission denied",
                                     adapter=self.adapter, command=args) from exc
        try:
            async with asyncio.timeout(limit):
                out, err = await proc.communicate()
        except TimeoutError as exc:
            await self._kill(proc)
            raise AdapterTimeout(f"{self.adapter}: `{shlex.join(args)}` did not finish; its processes were killed",
                                 adapter=self.adapter, command=args, timeout_s=limit) from exc
        except asyncio.CancelledError:
            await self._kill(proc)
            raise
        code = proc.returncode if proc.returncode is not None else -1
        return CommandResult(args, code, out, err.decode("utf-8", "replace"), attempt, time.monotonic() - started)

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        """Kill the command's whole process group (it runs in its own session) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await proc.wait()
