"""The job-side helper: what a training script imports to hear from the dcflex gateway.

Standard library only, so a training environment needs nothing else: ``import gateway.jobside``
imports no aiohttp, pydantic or openleadr (``gateway/__init__.py`` imports the standard library only; the wire
part lives in ``gateway.jobside.link``, equally light). ``tests/gateway/test_jobside_package.py`` proves it in a
bare virtualenv.

    from gateway import jobside

    start = load(jobside.resume_from())            # DCFLEX_RESUME_FROM, or None
    for step in range(start, total):
        train_step()
        if jobside.should_checkpoint():            # a cached flag: well under a microsecond
            asked = jobside.current()              # event id, deadline, stop_after
            jobside.acknowledge(save_checkpoint(step))   # sent in the background
            if asked is not None and asked.stop_after:
                jobside.flush(10); break           # the gateway stops the job next; leave cleanly

Configuration comes from the environment the adapter sets on submission: ``DCFLEX_GATEWAY_URL``,
``DCFLEX_JOB_ID`` (else Slurm's id in the notation the Slurm adapter uses: ``SLURM_ARRAY_JOB_ID``_
``SLURM_ARRAY_TASK_ID`` for an array task, else ``SLURM_JOB_ID``), ``DCFLEX_RESUME_FROM``, ``DCFLEX_POLL_S`` (default 5).

Why a background thread and a cached flag: a training step must never wait on the network, so
``should_checkpoint()`` only reads an attribute; a daemon thread polls ``GET /v1/jobs/{id}/directive``
every ``poll_s`` with urllib (timeouts of at most 2 s) and delivers acknowledgements and ETAs with
backoff while the gateway is unreachable (latest ETA wins; an acknowledgement is kept until sent,
including at interpreter exit for up to ``DCFLEX_EXIT_FLUSH_S``, default 5 s). Nothing here raises
into the training loop or blocks a step; an outage is logged once (logger ``dcflex.jobside``) and
its end once.

Directives: a directive from the gateway carries an increasing ``seq``; after ``acknowledge()``,
``should_checkpoint()`` stays False until a directive with a greater seq arrives. A directive the
gateway withdraws (event cancelled) clears the flag. For Slurm, ``install_signal_handler()`` makes a
signal (SIGUSR1 by default) raise the flag too. Slurm's ``scancel --batch --signal=USR1`` (what the
dcflex Slurm adapter sends) reaches only the batch shell, so the training process must *be* that
shell (``exec python train.py`` as the script's last line) or the script must forward it: start the
training in the background and wait for it (``python train.py & child=$!; trap 'kill -USR1 $child'
USR1; wait $child; wait $child``; bash runs a trap only between commands, hence ``&`` and ``wait``).
``#SBATCH --signal=B:USR1@120`` has the same batch-only semantics; without ``B:`` (or ``--batch``),
Slurm signals the job steps (``srun`` processes) instead, which also reaches a training run by srun.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator

from gateway.jobside.helper import JobHelper
from gateway.jobside.link import Directive

__all__ = [
    "Directive", "JobHelper", "acknowledge", "current", "default", "directives", "flush",
    "install_signal_handler", "report_eta", "resume_from", "should_checkpoint", "wait_directive",
]

# -- the default instance, built from the environment on first use -----------------------------------

_default: JobHelper | None = None
_default_lock = threading.Lock()


def default() -> JobHelper:
    """The process's helper, configured from the environment the first time it is needed."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = JobHelper.from_env()
    return _default


def should_checkpoint() -> bool:
    helper = _default if _default is not None else default()
    return helper.should_checkpoint()


def current() -> Directive | None:
    return default().current()


def wait_directive(timeout: float | None = None) -> Directive | None:
    return default().wait_directive(timeout)


def directives() -> AsyncGenerator[Directive, None]:
    return default().directives()


def acknowledge(checkpoint_path: str = "", event_id: str = "") -> None:
    default().acknowledge(checkpoint_path, event_id)


def report_eta(seconds_left: float) -> None:
    default().report_eta(seconds_left)


def resume_from() -> str | None:
    return default().resume_from()


def flush(timeout: float = 10.0) -> bool:
    return default().flush(timeout)


def install_signal_handler(signum: int | None = None) -> bool:
    return default().install_signal_handler(signum)

