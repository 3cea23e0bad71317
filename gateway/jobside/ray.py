"""The job-side helper inside a Ray Train worker loop: checkpoint when the gateway asks, then report.

Run against a real Ray (2.60, Train v2, ``tests/adapters/ray/test_adapter_real.py``): the worker reports
the checkpoint to Ray Train, acknowledges the copy Ray persisted under the run's storage path, and the
resubmitted job's worker restores from it. Ray is imported inside the functions only, so this module
imports without Ray (and the gateway process never imports it).

    from gateway.jobside.ray import report_with_checkpoint, resume_checkpoint

    def train_func(config):
        step = 0
        ckpt = resume_checkpoint()                     # Ray's own restore, else DCFLEX_RESUME_FROM
        if ckpt is not None:
            with ckpt.as_directory() as d:
                step = load_state(d)
        while step < config["steps"]:
            step += 1
            loss = train_one_step()
            report_with_checkpoint({"step": step, "loss": loss}, save=lambda d: save_state(d, step))

``ray.train.report`` is a barrier: every worker must call it the same number of times, so every
worker calls ``report_with_checkpoint`` every time; only the world-rank-0 worker looks at the flag,
writes a checkpoint and acknowledges (the other workers' flags are never read, so they cannot make
the workers disagree about which call carries the checkpoint). Ray Train runs the training function
outside the main thread, so signal handlers cannot be installed there: use the directives the gateway
serves (``DCFLEX_GATEWAY_URL`` and ``DCFLEX_JOB_ID`` in the job's runtime env reach every worker).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from gateway import jobside

__all__ = ["report_with_checkpoint", "resume_checkpoint"]


def report_with_checkpoint(metrics: Mapping[str, Any], save: Callable[[str], None], *,
                           helper: jobside.JobHelper | None = None) -> str | None:
    """``ray.train.report(metrics)``; when the gateway asks for a checkpoint (rank 0), first ``save(dir)``
    into a fresh directory, report it as the checkpoint, and acknowledge with where Ray persisted it.
    Returns the acknowledged path, or None when no checkpoint was taken."""
    import ray.train

    helper = helper if helper is not None else jobside.default()
    rank0 = ray.train.get_context().get_world_rank() == 0
    if not (rank0 and helper.should_checkpoint()):
        ray.train.report(dict(metrics))
        return None
    asked = helper.current()
    before = _persisted_path(ray.train.get_checkpoint(), fallback="")
    local = tempfile.mkdtemp(prefix="dcflex-ckpt-")
    path = ""
    try:
        save(local)
        ray.train.report(dict(metrics), checkpoint=ray.train.Checkpoint.from_directory(local))
        after = _persisted_path(ray.train.get_checkpoint(), fallback="")
        # Ray copies the directory to its storage and (Train v1) returns the copy from get_checkpoint();
        # if it did not move on, acknowledge the staging directory and keep it.
        path = after if after and after != before else local
    finally:
        if path != local:  # copied by Ray, or save/report failed: the staging directory is not needed
            shutil.rmtree(local, ignore_errors=True)
    helper.acknowledge(path, asked.event_id if asked is not None else "")
    return path


def resume_checkpoint() -> Any:
    """The checkpoint to resume from: Ray's own (a restored run), else ``DCFLEX_RESUME_FROM`` (the
    gateway resubmitted the job after an event), else None. A ``ray.train.Checkpoint`` either way."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        return ckpt
    path = jobside.resume_from()
    return ray.train.Checkpoint(path) if path else None


def _persisted_path(ckpt: Any, *, fallback: str) -> str:
    """Where Ray keeps the reported checkpoint (storage_path/…/checkpoint_…), with its file system's
    scheme when it is not local (Checkpoint.path drops it: ``bucket/key`` for ``s3://bucket/key``)."""
    if ckpt is None or not getattr(ckpt, "path", None):
        return fallback
    path = str(ckpt.path)
    kind = str(getattr(getattr(ckpt, "filesystem", None), "type_name", "local"))
    return path if kind == "local" or "://" in path else f"{kind}://{path}"
