"""Holding what a stopped job freed, so Ray does not start other work in it before the job comes back.

Ray has no drain for a static cluster, and an autoscaler limit only stops new nodes, not new work on
the nodes there are. What does work on any real cluster is a placement group: it reserves resources
that no task or actor outside it may use. The gateway never imports ``ray``, so the group is made by a
tiny job of its own, submitted through the Jobs API right after the stop: its driver creates a
*detached* placement group of the stopped job's GPUs (``dcflex.gpus`` bundles of one ``gpu_resource``
each, packed), named after the job and the event, and exits at once: no process of the gateway's
stays on the cluster while the job waits. At the restart, before the resubmission, a second tiny job
removes the group by name. If the freed GPUs were taken before the group could form, it waits, and
holds them as soon as they free up: it may hold a little late, never more than was asked.

Both jobs' submission ids derive from the job and the event (``hold_id``), so a retried or restarted
gateway finds the same group; their ``dcflex.hold_for`` metadata keeps them out of snapshots. A group
whose release never ran (its journal lost) stays until removed by hand: ``ray list placement-groups``
shows it by its name, ``<job>-dcflex-hold-<hex>``.
"""

from __future__ import annotations

import hashlib
import json
import shlex

from adapters.ray.model import JobSpec

__all__ = ["HOLD_SCRIPT", "KEY_HOLD_FOR", "hold_id", "hold_spec", "release_spec"]

KEY_HOLD_FOR = "dcflex.hold_for"

HOLD_SCRIPT = """\
import json, sys
import ray
from ray.util import get_placement_group, remove_placement_group
from ray.util.placement_group import placement_group
mode, name = sys.argv[1], sys.argv[2]
ray.init(namespace="dcflex-holds")
if mode == "hold":
    try:
        get_placement_group(name)
        print("dcflex-hold: already there", name, flush=True)
    except ValueError:
        bundles = json.loads(sys.argv[3])
        placement_group(bundles, strategy="PACK", name=name, lifetime="detached")
        print("dcflex-hold: asked for", bundles, "as", name, flush=True)
else:
    try:
        remove_placement_group(get_placement_group(name))
        print("dcflex-hold: released", name, flush=True)
    except ValueError:
        print("dcflex-hold: nothing held as", name, flush=True)
"""


def hold_id(job_id: str, event_id: str) -> str:
    """The placement group's name, and the hold job's submission id."""
    digest = hashlib.sha1(f"hold\n{job_id}\n{event_id}".encode()).hexdigest()[:8]
    return f"{job_id[:100]}-dcflex-hold-{digest}"


def _spec(mode: str, sid: str, job_id: str, python: str, *extra: str) -> JobSpec:
    entrypoint = shlex.join([python, "-c", HOLD_SCRIPT, mode, hold_id_of(sid), *extra])
    return JobSpec(entrypoint, sid, metadata={KEY_HOLD_FOR: job_id, "dcflex.tier": "critical", "job_name": sid},
                   entrypoint_num_cpus=0)


def hold_id_of(sid: str) -> str:
    return sid.removesuffix("-release")


def hold_spec(job_id: str, event_id: str, gpus: int, resource: str, python: str) -> JobSpec:
    """The job that reserves ``gpus`` of ``resource`` freed by ``job_id`` (see the module docstring)."""
    return _spec("hold", hold_id(job_id, event_id), job_id, python, json.dumps([{resource: 1.0}] * gpus))


def release_spec(job_id: str, event_id: str, python: str) -> JobSpec:
    """The job that removes that reservation."""
    return _spec("release", hold_id(job_id, event_id) + "-release", job_id, python)
