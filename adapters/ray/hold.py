"""Holding what a stopped job freed, so Ray does not start other work in it before the job comes back.

Ray has no drain for a static cluster, and an autoscaler limit only stops new nodes, not new work on
the nodes there are. What does work on any real cluster is a placement group: it reserves resources
that no task or actor outside it may use. The gateway never imports ``ray``, so the reservation is made
by a tiny job of its own, submitted through the Jobs API right after the stop: its driver creates a
placement group of the stopped job's GPUs (``dcflex.gpus`` bundles of one ``gpu_resource`` each, packed)
and sleeps; stopping that job (at the restart, just before the resubmission) ends its driver, and Ray
removes the group with it. If the freed GPUs were taken before the group could form, it waits, and
holds them as soon as they free up: it may hold a little late, never more than was asked.

The holder's submission id is derived from the job and the event (``hold_id``), so a retried or
restarted gateway finds the same holder; its ``dcflex.hold_for`` metadata keeps it out of snapshots.
"""

from __future__ import annotations

import hashlib
import json
import shlex

from adapters.ray.model import JobSpec

__all__ = ["HOLD_SCRIPT", "KEY_HOLD_FOR", "hold_id", "hold_spec"]

KEY_HOLD_FOR = "dcflex.hold_for"

HOLD_SCRIPT = """\
import json, sys, time
import ray
from ray.util.placement_group import placement_group
bundles, name = json.loads(sys.argv[1]), sys.argv[2]
ray.init()
pg = placement_group(bundles, strategy="PACK", name=name)
while not pg.wait(timeout_seconds=10):
    print("dcflex-hold: waiting for", bundles, flush=True)
print("dcflex-hold: reserved", bundles, flush=True)
while True:
    time.sleep(3600)
"""


def hold_id(job_id: str, event_id: str) -> str:
    digest = hashlib.sha1(f"hold\n{job_id}\n{event_id}".encode()).hexdigest()[:8]
    return f"{job_id[:100]}-dcflex-hold-{digest}"


def hold_spec(job_id: str, event_id: str, gpus: int, resource: str, python: str) -> JobSpec:
    """The holder job for ``gpus`` of ``resource`` freed by ``job_id`` (see the module docstring)."""
    sid = hold_id(job_id, event_id)
    bundles = [{resource: 1.0}] * gpus
    entrypoint = shlex.join([python, "-c", HOLD_SCRIPT, json.dumps(bundles), sid])
    return JobSpec(entrypoint, sid, metadata={KEY_HOLD_FOR: job_id, "dcflex.tier": "critical", "job_name": sid},
                   entrypoint_num_cpus=0)
