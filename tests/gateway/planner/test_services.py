"""Replicated services (Ray Serve deployments): the planner takes replicas away, one command per replica,
never below what the tier allows or the service's floor, and gives them back one at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.domain import Action, ActionKind, Job, Tier
from gateway.engine.restore import build_restore
from gateway.journal import Journal
from gateway.journal.codec import action_from_dict, action_to_dict
from gateway.planner import plan
from tests.gateway.planner import NOW, directive, policy, snapshot

FULL_W, IDLE_W = 367.56943791478085, 60.0
PER_GPU_KW = (FULL_W - IDLE_W) / 1000  # what a GPU freed by a replica sheds (it idles)


def service(job_id: str, tier: Tier, replicas: int, gpus_per_replica: int = 2, **kw: object) -> Job:
    return Job(job_id=job_id, tier=tier, gpus=replicas * gpus_per_replica, workload="average", pausable=False,
               cappable=False, requeueable=False, checkpointable=False, replicas=replicas, **kw)  # type: ignore[arg-type]


def test_a_flex50_service_loses_at_most_half_its_replicas_one_command_each() -> None:
    svc = service("serve:llm/Model", Tier.FLEX_50, 4)
    p = plan(directive(0.0), snapshot(svc), policy(tolerance_kw=0.01, ramp_rate_kw_per_min=0.3), NOW)
    assert [(a.key, a.kind, a.replicas) for a in p.shed] == [
        ("ev-1/scale_down/serve:llm/Model/3", ActionKind.SCALE_DOWN, 3),
        ("ev-1/scale_down/serve:llm/Model/2", ActionKind.SCALE_DOWN, 2),
    ]
    for a in p.shed:
        assert a.delta_kw == pytest.approx(-2 * PER_GPU_KW)
        assert a.reason.startswith("scale serve:llm/Model to ") and "of 4 replica(s)" in a.reason
    # the replica taken last comes back first, one command per replica, each under the ramp rate
    assert [(a.key, a.kind, a.replicas) for a in p.restore] == [
        ("ev-1/scale_up/serve:llm/Model/3", ActionKind.SCALE_UP, 3),
        ("ev-1/scale_up/serve:llm/Model/4", ActionKind.SCALE_UP, 4),
    ]
    # 0.615 kW at 0.3 kW/min: over two minutes apart, both ways
    assert p.shed[1].at - p.shed[0].at >= timedelta(seconds=123)
    assert p.restore[1].at - p.restore[0].at >= timedelta(seconds=123)
    assert [(j, round(x, 6)) for j, x in p.job_loss] == [("serve:llm/Model", 0.5)]  # one entry for the service
    assert p.shortfall is not None and "1 service(s) are down to the fewest replicas their tier allows" in p.shortfall.reason


def test_replicas_removed_by_an_earlier_plan_count_against_the_tier() -> None:
    # re-planning mid-event: the adapter reports 2 replicas running and 2 taken by the gateway
    svc = service("s", Tier.FLEX_50, 2, replicas_removed=2)
    p = plan(directive(0.0), snapshot(svc), policy(tolerance_kw=0.01), NOW)
    assert p.shed == ()
    flex25 = service("s", Tier.FLEX_25, 7, replicas_removed=1)  # 25 % of 8 = 2: one more may go
    p = plan(directive(0.0), snapshot(flex25), policy(tolerance_kw=0.01), NOW)
    assert [a.replicas for a in p.shed] == [6]


def test_a_service_always_keeps_its_floor_and_one_replica() -> None:
    pre = service("s", Tier.PREEMPTIBLE, 3)
    p = plan(directive(0.0), snapshot(pre), policy(tolerance_kw=0.01), NOW)
    assert [a.replicas for a in p.shed] == [2, 1]
    floored = service("s", Tier.PREEMPTIBLE, 5, min_replicas=3)
    assert [a.replicas for a in plan(directive(0.0), snapshot(floored), policy(tolerance_kw=0.01), NOW).shed] == [4, 3]
    crit = service("s", Tier.CRITICAL, 5)
    assert plan(directive(0.0), snapshot(crit), policy(tolerance_kw=0.01), NOW).shed == ()


def test_only_as_many_replicas_as_the_need_and_caps_come_first() -> None:
    svc = service("s", Tier.PREEMPTIBLE, 8)
    need_two = 16 * IDLE_W / 1000 + 16 * PER_GPU_KW - 1.5 * 2 * PER_GPU_KW  # 1.5 replicas' worth
    p = plan(directive(need_two), snapshot(svc), policy(tolerance_kw=0.01), NOW)
    assert [a.replicas for a in p.shed] == [7, 6]
    # a cappable flex job that can meet the need alone: the service is not touched
    capped = Job(job_id="train", tier=Tier.FLEX_25, gpus=64, workload="average")
    total = 80 * IDLE_W / 1000 + 80 * PER_GPU_KW  # 16 GPUs of the service, 64 of the job
    p = plan(directive(total - 2.0), snapshot(svc, capped), policy(tolerance_kw=0.01), NOW)
    assert {a.kind for a in p.shed} == {ActionKind.CAP} and p.shortfall is None


def test_restore_from_the_journal_brings_replicas_back_one_by_one(tmp_path: object) -> None:
    downs = [Action(key=f"ev/scale_down/s/{r}", kind=ActionKind.SCALE_DOWN, at=NOW, job_id="s", delta_kw=-0.6,
                    tier="flex-50", replicas=r) for r in (3, 2)]
    with Journal(f"{tmp_path}/j.db") as journal:
        for a in downs:
            journal.mark_action(a, "ev", "done", NOW)
        undos = build_restore("ev", journal.outstanding("ev"), NOW, ramp_kw_per_min=0.6)
    assert [(u.action.key, u.action.replicas, u.covers) for u in undos] == [
        ("ev/scale_up/s/3", 3, ("ev/scale_down/s/2",)),
        ("ev/scale_up/s/4", 4, ("ev/scale_down/s/3",)),
    ]
    assert undos[1].action.at - undos[0].action.at == timedelta(minutes=1)  # 0.6 kW at 0.6 kW/min


def test_a_scale_command_needs_a_replica_count_and_survives_the_journal_codec() -> None:
    with pytest.raises(ValueError, match="needs a replica count"):
        Action(key="k", kind=ActionKind.SCALE_DOWN, at=NOW, job_id="s")
    a = Action(key="k", kind=ActionKind.SCALE_UP, at=NOW, job_id="s", replicas=4)
    assert action_from_dict(action_to_dict(a)) == a
    assert ActionKind.SCALE_DOWN.undo is ActionKind.SCALE_UP and ActionKind.SCALE_DOWN.sheds
