"""Domain values: frozen, validated on creation, times in UTC.

Re-exported here so the rest of the code imports ``gateway.domain`` and not its file layout.
"""

from gateway.domain.events import EventState, GridEvent, Interval, OptDecision, Signal, SignalKind
from gateway.domain.jobs import ClusterSnapshot, Job, JobState, Node, Tier
from gateway.domain.plan import Action, ActionKind, Directive, Plan, Segment, Shortfall

__all__ = [
    "Action",
    "ActionKind",
    "ClusterSnapshot",
    "Directive",
    "EventState",
    "GridEvent",
    "Interval",
    "Job",
    "JobState",
    "Node",
    "OptDecision",
    "Plan",
    "Segment",
    "Shortfall",
    "Signal",
    "SignalKind",
    "Tier",
]
