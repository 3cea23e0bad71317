"""Tier, GPUs and resumability of Ray jobs from their metadata, with the configured rules as fallback."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.ray.levers import resubmission_id
from adapters.ray.model import KEY_ENTRYPOINT, RayJob
from adapters.ray.tiers import RayTierResolver, to_domain
from gateway.config.models import TierRule, TiersConfig
from gateway.domain import JobState, Tier

JOBS = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "ray-2.60" / "jobs.json").read_text())
NOW = datetime(2026, 11, 26, 11, 30, tzinfo=UTC)
RULES = TiersConfig(default=Tier.FLEX_10, rules=(
    TierRule(tier=Tier.CRITICAL, qos="high", label="team=search"),      # a Slurm field: never a Ray match
    TierRule(tier=Tier.FLEX_50, label="kind=sweep"),
    TierRule(tier=Tier.PREEMPTIBLE, name_pattern="nightly-eval-*"),
    TierRule(tier=Tier.FLEX_25, label="team=search", name_pattern="*-ft"),
))


def job(metadata: dict[str, str] | None = None, **over: Any) -> RayJob:
    return RayJob.from_json({**JOBS[0], "metadata": metadata, **over})


def test_the_captured_job_reads_its_metadata() -> None:
    rj = RayJob.from_json(JOBS[0])
    policy = RayTierResolver(RULES).resolve(rj)
    assert (policy.tier, policy.gpus, policy.resumable, policy.checkpoint_grace_s) == (Tier.FLEX_25, 2, True, 30.0)
    d = to_domain(rj, policy, NOW)
    assert (d.job_id, d.name, d.state, d.scheduler) == ("train-a", "llm-pretrain", JobState.RUNNING, "ray")
    assert not d.pausable and not d.cappable and d.checkpointable and d.requeueable
    assert d.elapsed_s == pytest.approx((NOW - rj.start_time).total_seconds())  # type: ignore[operator]


@pytest.mark.parametrize(("metadata", "sid", "tier"), [
    ({"kind": "sweep"}, "x", Tier.FLEX_50),
    ({}, "nightly-eval-42", Tier.PREEMPTIBLE),
    ({"job_name": "nightly-eval-7"}, "raysubmit_abc", Tier.PREEMPTIBLE),
    ({"team": "search"}, "bert-ft", Tier.FLEX_25),
    ({"team": "search"}, "bert", Tier.FLEX_10),                 # the label alone is not the whole rule
    ({"dcflex.tier": "Critical", "kind": "sweep"}, "x", Tier.CRITICAL),  # metadata first
])
def test_rules_decide_when_the_metadata_does_not(metadata: dict[str, str], sid: str, tier: Tier) -> None:
    assert RayTierResolver(RULES).resolve(job(metadata, submission_id=sid)).tier is tier


def test_invalid_metadata_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    resolver = RayTierResolver(RULES, default_grace_s=90.0)
    bad = {"dcflex.tier": "gold", "dcflex.gpus": "1.5", "dcflex.resumable": "maybe",
           "dcflex.checkpoint_grace_s": "9999", "kind": "sweep"}
    with caplog.at_level(logging.WARNING, "dcflex.adapters.ray"):
        first = resolver.resolve(job(bad))
        resolver.resolve(job(bad, submission_id="other"))
    assert (first.tier, first.gpus, first.resumable, first.checkpoint_grace_s) == (Tier.FLEX_50, 0, False, 90.0)
    assert caplog.text.count("ignoring metadata") == 4


def test_gpus_fall_back_to_the_recorded_entrypoint_gpus() -> None:
    md = {KEY_ENTRYPOINT: json.dumps({"entrypoint_num_gpus": 1.5})}
    assert RayTierResolver(RULES).resolve(job(md)).gpus == 2
    assert RayTierResolver(RULES).resolve(job({**md, "dcflex.gpus": "8"})).gpus == 8


def test_a_job_the_gateway_stopped_is_stopped_until_resubmitted() -> None:
    resolver = RayTierResolver(RULES)
    for status in ("STOPPED", "SUCCEEDED"):
        ended = job({"dcflex.resumable": "true"}, status=status, end_time=1795692400000)
        assert to_domain(ended, resolver.resolve(ended), NOW, held=True).state is JobState.STOPPED
        assert to_domain(ended, resolver.resolve(ended), NOW).state is JobState.COMPLETED
    running = RayJob.from_json(JOBS[0])
    assert to_domain(running, resolver.resolve(running), NOW, checkpointing=True).state is JobState.CHECKPOINTING


def test_resubmission_ids_are_stable_per_event_and_do_not_grow() -> None:
    first = resubmission_id("train-a", "ev-1")
    assert first == resubmission_id("train-a", "ev-1") != resubmission_id("train-a", "ev-2")
    assert first.startswith("train-a-dcflex-") and len(first) == len("train-a-dcflex-") + 8
    second = resubmission_id(first, "ev-2")
    assert second.startswith("train-a-dcflex-") and len(second) == len(first) and second != first


def test_a_time_limit_in_the_metadata_gives_the_jobs_expected_end() -> None:
    rj = job({"dcflex.tier": "flex-25", "dcflex.time_limit_s": "7200"})
    elapsed = (NOW - rj.start_time).total_seconds()  # type: ignore[operator]
    d = to_domain(rj, RayTierResolver(RULES).resolve(rj), NOW)
    assert d.remaining_s == pytest.approx(max(0.0, 7200 - elapsed))
    over = job({"dcflex.time_limit_s": "1"})
    assert to_domain(over, RayTierResolver(RULES).resolve(over), NOW).remaining_s == 0.0  # overdue: due now
    unknown = job({"dcflex.time_limit_s": "soon"})
    assert to_domain(unknown, RayTierResolver(RULES).resolve(unknown), NOW).remaining_s is None
