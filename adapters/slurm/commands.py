"""The exact command lines of every Slurm lever, built from validated arguments.

One place builds them, so ``describe()`` (dry-run, operators' logs) and ``apply()`` can never
disagree about what is run. Every argument that came from Slurm, a job's comment or the planner
goes through a ``runner.valid_*`` check first.

Choices worth knowing:

- checkpoint: ``scancel --batch --signal=SIG <id>`` signals only the batch script, which traps it
  and tells the training process; ``scancel`` is never used without ``--signal`` (it would kill).
- stop: ``scontrol requeuehold <id>`` requeues the job *and* holds it in one request. Two requests
  (``requeue`` then ``hold``) leave a window in which a controller failure or a fast scheduler
  pass restarts the job during the event; the end state (pending, held, restart count + 1, undone
  by ``scontrol release``) is the same.
- drain reason: ``dcflex <event id>``; the prefix is how the gateway later recognises its own drains
  (``adapters.slurm.tiers.GATEWAY_DRAIN_PREFIX``) and never undoes anyone else's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from adapters.slurm.runner import valid_job_id, valid_node, valid_signal, valid_watts
from adapters.slurm.tiers import GATEWAY_DRAIN_PREFIX
from gateway.config.models import SlurmSchedulerConfig

__all__ = ["SlurmCommands", "drain_reason", "event_of"]

_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]+")


def event_of(action_key: str) -> str:
    """The event id an action belongs to: the action key's prefix before the first ``/``."""
    return action_key.split("/", 1)[0]


def drain_reason(event_id: str) -> str:
    """``dcflex <event id>``, the event id reduced to safe characters (Slurm stores it as free text)."""
    safe = _REASON_UNSAFE.sub("-", event_id).strip("-")[:64]
    return f"{GATEWAY_DRAIN_PREFIX} {safe}" if safe else GATEWAY_DRAIN_PREFIX


class SlurmCommands:
    """argv builders for ``SlurmSchedulerConfig``'s commands (absolute paths are kept as given)."""

    def __init__(self, cfg: SlurmSchedulerConfig, *, min_cap_w: float, max_cap_w: float) -> None:
        if not 0 < min_cap_w < max_cap_w:
            raise ValueError("need 0 < min_cap_w < max_cap_w")
        self.cfg = cfg
        self.min_cap_w = min_cap_w
        self.max_cap_w = max_cap_w

    # --------------------------------------------------------------------------- reads

    def squeue(self) -> list[str]:
        """Every job, held and suspended ones included; ``--all`` adds hidden partitions' jobs.

        (22.05's ``--json`` ignores filters such as ``--jobs``, so the adapter filters itself.)
        """
        return [self.cfg.squeue, "--json", "--all"]

    def sinfo(self) -> list[str]:
        return [self.cfg.sinfo, "--json"]

    # ---------------------------------------------------------------------------- jobs

    def signal(self, job_id: str, sig: str) -> list[str]:
        return [self.cfg.scancel, "--batch", f"--signal={valid_signal(sig)}", valid_job_id(job_id)]

    def requeue_hold(self, job_id: str) -> list[str]:
        return [self.cfg.scontrol, "requeuehold", valid_job_id(job_id)]

    def hold(self, job_id: str) -> list[str]:
        return [self.cfg.scontrol, "hold", valid_job_id(job_id)]

    def release(self, job_id: str) -> list[str]:
        return [self.cfg.scontrol, "release", valid_job_id(job_id)]

    def suspend(self, job_id: str) -> list[str]:
        return [self.cfg.scontrol, "suspend", valid_job_id(job_id)]

    def resume(self, job_id: str) -> list[str]:
        return [self.cfg.scontrol, "resume", valid_job_id(job_id)]

    # --------------------------------------------------------------------------- nodes

    def drain(self, nodes: Sequence[str], event_id: str) -> list[str]:
        return [self.cfg.scontrol, "update", self._node_arg(nodes), "State=DRAIN", f"Reason={drain_reason(event_id)}"]

    def undrain(self, nodes: Sequence[str]) -> list[str]:
        return [self.cfg.scontrol, "update", self._node_arg(nodes), "State=RESUME"]

    @staticmethod
    def _node_arg(nodes: Sequence[str]) -> str:
        if not nodes:
            raise ValueError("no nodes given")
        return "NodeName=" + ",".join(valid_node(n) for n in nodes)

    # --------------------------------------------------------------------------- power

    def clamp(self, watts: float | None) -> float:
        """``watts`` within [min_cap_w, max_cap_w]; None (no limit) is the maximum."""
        if watts is None:
            return self.max_cap_w
        return min(self.max_cap_w, max(self.min_cap_w, valid_watts(watts)))

    def power_cap(self, job_id: str, node: str, watts: float, slurm_id: int = 0) -> list[str]:
        """The configured template for one node; watts are clamped and rounded to whole watts.

        ``{job_id}`` is the numeric id ``srun --jobid`` accepts: for an array task (``123_4``) or a het
        component (``123+1``) that is its own id (``slurm_id``), not Slurm's display notation."""
        numeric = str(slurm_id) if slurm_id > 0 else valid_job_id(job_id)
        values = {"job_id": numeric, "node": valid_node(node), "watts": round(self.clamp(watts))}
        return [arg.format(**values) for arg in self.cfg.power_cap_command]
