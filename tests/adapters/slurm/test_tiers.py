"""Tier resolution (comment tags → rules → default) and the mapping of Slurm jobs/nodes to the domain."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.slurm.model import SlurmJob, SlurmNode
from adapters.slurm.parse import parse_sinfo, parse_squeue
from adapters.slurm.tiers import JobPolicy, TierResolver, nodes_to_domain, parse_comment_tags, to_domain
from gateway.config.models import TierRule, TiersConfig
from gateway.domain import JobState, Tier

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOGGER = "dcflex.adapters.slurm"
NOW = datetime(2025, 5, 27, 13, 0, tzinfo=UTC)


def make_job(**overrides: object) -> SlurmJob:
    base = SlurmJob(
        job_id="100", name="train-llm", user="alice", account="llm", partition="batch", qos="normal", comment="",
        state="RUNNING", state_reason="None", nodes=("gpu001", "gpu002"), gpus=16, requeue=True,
        submit_time=NOW - timedelta(hours=2), start_time=NOW - timedelta(hours=1),
        end_time=NOW + timedelta(hours=3), time_limit_s=4 * 3600.0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- comment tags


@pytest.mark.parametrize(
    ("comment", "tier", "signal", "grace"),
    [
        ("dcflex:tier=flex-25", Tier.FLEX_25, None, None),
        ("dcflex:checkpoint=USR1:120", None, "USR1", 120.0),
        ("dcflex:tier=flex-25 dcflex:checkpoint=USR2:60", Tier.FLEX_25, "USR2", 60.0),
        ("dcflex:tier=preemptible,dcflex:checkpoint=SIGTERM:0", Tier.PREEMPTIBLE, "TERM", 0.0),
        ("nightly run, owner bob; dcflex:tier=FLEX-50, more text", Tier.FLEX_50, None, None),
        ("dcflex:checkpoint=usr1:3600 dcflex:tier=critical", Tier.CRITICAL, "USR1", 3600.0),
        ("dcflex:tier=flex-10 dcflex:tier=flex-50", Tier.FLEX_10, None, None),  # the first valid one wins
        ("dcflex:tier=bogus dcflex:tier=flex-50", Tier.FLEX_50, None, None),
        ("dcflex:checkpoint=USR1:90s", None, "USR1", 90.0),
        ("no tags here", None, None, None),
    ],
)
def test_valid_tags(comment: str, tier: Tier | None, signal: str | None, grace: float | None) -> None:
    tags = parse_comment_tags(comment)
    assert (tags.tier, tags.checkpoint_signal, tags.checkpoint_grace_s) == (tier, signal, grace)


@pytest.mark.parametrize(
    ("comment", "problem"),
    [
        ("dcflex:tier=flex-99", "unknown tier"),
        ("dcflex:tier=", "expected dcflex:<key>=<value>"),
        ("dcflex:tier", "expected dcflex:<key>=<value>"),
        ("dcflex:checkpoint=KILL:30", "signal 'KILL' not allowed"),
        ("dcflex:checkpoint=STOP:30", "signal 'STOP' not allowed"),
        ("dcflex:checkpoint=USR1", "expected SIGNAL:GRACE_SECONDS"),
        ("dcflex:checkpoint=USR1:-1", "outside [0, 3600]"),
        ("dcflex:checkpoint=USR1:3601", "outside [0, 3600]"),
        ("dcflex:checkpoint=USR1:nan", "outside [0, 3600]"),
        ("dcflex:checkpoint=USR1:soon", "is not a number"),
        ("dcflex:priority=high", "unknown tag"),
    ],
)
def test_invalid_tags_are_reported_not_applied(comment: str, problem: str) -> None:
    tags = parse_comment_tags(comment)
    assert (tags.tier, tags.checkpoint_signal, tags.checkpoint_grace_s) == (None, None, None)
    assert len(tags.problems) == 1 and problem in tags.problems[0]


# ------------------------------------------------------------------------------------- resolution


def resolver(*rules: TierRule, default: Tier = Tier.CRITICAL) -> TierResolver:
    return TierResolver(TiersConfig(default=default, rules=rules))


def test_default_is_critical_unless_configured() -> None:
    assert resolver().resolve(make_job()) == JobPolicy(Tier.CRITICAL, None, None, "default")
    assert resolver(default=Tier.FLEX_10).resolve(make_job()).tier is Tier.FLEX_10


@pytest.mark.parametrize(
    ("rule", "matching", "other"),
    [
        (TierRule(tier=Tier.FLEX_50, qos="low"), {"qos": "low"}, {"qos": "normal"}),
        (TierRule(tier=Tier.FLEX_50, partition="spot"), {"partition": "spot"}, {"partition": "spots"}),
        (TierRule(tier=Tier.FLEX_50, account="vision"), {"account": "vision"}, {"account": "Vision"}),
        (TierRule(tier=Tier.FLEX_50, user="carol"), {"user": "carol"}, {"user": "carol2"}),
        (TierRule(tier=Tier.FLEX_50, name_pattern="sweep-*"), {"name": "sweep-lr3"}, {"name": "Sweep-lr3"}),
        (TierRule(tier=Tier.FLEX_50, name_pattern="eval-?"), {"name": "eval-7"}, {"name": "eval-17"}),
    ],
)
def test_each_rule_field(rule: TierRule, matching: dict[str, str], other: dict[str, str]) -> None:
    r = resolver(rule)
    policy = r.resolve(make_job(**matching))
    assert policy.tier is Tier.FLEX_50 and policy.rule.startswith("rules[0] (")
    assert r.resolve(make_job(**other)) == JobPolicy(Tier.CRITICAL, rule="default")


def test_a_rule_needs_every_given_field() -> None:
    r = resolver(TierRule(tier=Tier.PREEMPTIBLE, partition="spot", user="carol"))
    assert r.resolve(make_job(partition="spot", user="carol")).tier is Tier.PREEMPTIBLE
    assert r.resolve(make_job(partition="spot", user="alice")).tier is Tier.CRITICAL
    assert r.resolve(make_job(partition="batch", user="carol")).tier is Tier.CRITICAL


def test_rules_in_order_first_match_wins() -> None:
    r = resolver(
        TierRule(tier=Tier.FLEX_10, label="team=vision"),  # Ray only: never matches a Slurm job
        TierRule(tier=Tier.FLEX_25, partition="batch"),
        TierRule(tier=Tier.PREEMPTIBLE, account="llm"),
    )
    policy = r.resolve(make_job(partition="batch", account="llm"))
    assert policy.tier is Tier.FLEX_25
    assert policy.rule == "rules[1] (partition=batch) → flex-25"
    assert r.resolve(make_job(partition="gpu", account="llm")).rule == "rules[2] (account=llm) → preemptible"


def test_tag_wins_over_rules_and_checkpoint_tag_survives_rule_tiers() -> None:
    r = resolver(TierRule(tier=Tier.PREEMPTIBLE, partition="batch"))
    tagged = r.resolve(make_job(comment="dcflex:tier=flex-10 dcflex:checkpoint=USR1:120"))
    assert tagged == JobPolicy(Tier.FLEX_10, "USR1", 120.0, "comment tag")
    only_ck = r.resolve(make_job(comment="dcflex:checkpoint=USR2:30"))
    assert (only_ck.tier, only_ck.checkpoint_signal, only_ck.checkpoint_grace_s) == (Tier.PREEMPTIBLE, "USR2", 30.0)
    assert only_ck.rule.startswith("rules[0]")


def test_restart_tag_sets_the_restart_time_whoever_decides_the_tier() -> None:
    r = resolver(TierRule(tier=Tier.PREEMPTIBLE, partition="batch"))
    tagged = r.resolve(make_job(comment="dcflex:tier=flex-10 dcflex:restart=45s dcflex:checkpoint=USR1:20"))
    assert tagged == JobPolicy(Tier.FLEX_10, "USR1", 20.0, "comment tag", 45.0)
    by_rule = r.resolve(make_job(comment="dcflex:restart=2.5"))
    assert (by_rule.tier, by_rule.restart_s) == (Tier.PREEMPTIBLE, 2.5)
    assert to_domain(make_job(), by_rule, NOW).restart_s == 2.5
    assert to_domain(make_job(), JobPolicy(Tier.FLEX_10), NOW).restart_s == 120.0  # the domain default
    for bad, problem in (("dcflex:restart=-1", "outside [0, 3600]"), ("dcflex:restart=later", "not a number")):
        tags = parse_comment_tags(bad)
        assert tags.restart_s is None and len(tags.problems) == 1 and problem in tags.problems[0]


def test_invalid_tag_falls_through_to_rules_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    r = resolver(TierRule(tier=Tier.FLEX_50, partition="batch"))
    comment = "dcflex:tier=flex-99 dcflex:checkpoint=KILL:30"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        policies = [r.resolve(make_job(job_id=str(i), comment=comment)) for i in range(5)]
    assert all(p == JobPolicy(Tier.FLEX_50, None, None, "rules[0] (partition=batch) → flex-50") for p in policies)
    assert len(caplog.records) == 1
    assert "job 0" in caplog.text and "flex-99" in caplog.text and "KILL" in caplog.text


def test_fixture_jobs_resolve_from_their_tags() -> None:
    jobs = {j.job_id: j for j in parse_squeue((FIXTURES / "slurm-22.05" / "squeue.json").read_bytes())}
    r = resolver(TierRule(tier=Tier.FLEX_50, name_pattern="big-*"))
    assert r.resolve(jobs["1"]).tier is Tier.FLEX_25
    assert r.resolve(jobs["2"]).tier is Tier.CRITICAL
    assert r.resolve(jobs["4_0"]).tier is Tier.PREEMPTIBLE
    assert r.resolve(jobs["10"]).tier is Tier.FLEX_50
    assert r.resolve(jobs["3"]).rule == "default"


# -------------------------------------------------------------------------------------- to_domain


@pytest.mark.parametrize(
    ("overrides", "state"),
    [
        ({"state": "RUNNING"}, JobState.RUNNING),
        ({"state": "RUNNING", "state_flags": ("CONFIGURING",)}, JobState.RUNNING),
        ({"state": "RUNNING", "state_flags": ("STOPPED",)}, JobState.SUSPENDED),
        ({"state": "SUSPENDED"}, JobState.SUSPENDED),
        ({"state": "PENDING"}, JobState.PENDING),
        ({"state": "PENDING", "held": True}, JobState.PENDING),  # held before it ever ran
        ({"state": "PENDING", "restart_count": 2}, JobState.PENDING),  # requeued, Slurm restarts it itself
        ({"state": "PENDING", "held": True, "restart_count": 1}, JobState.STOPPED),
        ({"state": "PENDING", "held": True, "state_flags": ("REQUEUE_HOLD",)}, JobState.STOPPED),
        ({"state": "COMPLETING", "state_flags": ("COMPLETING",)}, JobState.COMPLETED),
        ({"state": "CANCELLED", "state_flags": ("COMPLETING",)}, JobState.COMPLETED),
        ({"state": "TIMEOUT"}, JobState.COMPLETED),
        ({"state": "OUT_OF_MEMORY"}, JobState.COMPLETED),
        ({"state": "SOMETHING_NEW"}, JobState.PENDING),
    ],
)
def test_states(overrides: dict[str, object], state: JobState) -> None:
    assert to_domain(make_job(**overrides), JobPolicy(Tier.FLEX_25), NOW).state is state


def test_running_job_fields() -> None:
    policy = JobPolicy(Tier.FLEX_25, "USR1", 120.0, "comment tag")
    job = to_domain(make_job(), policy, NOW)
    assert (job.job_id, job.tier, job.gpus, job.nodes) == ("100", Tier.FLEX_25, 16, ("gpu001", "gpu002"))
    assert (job.name, job.workload, job.scheduler) == ("train-llm", "train-llm", "slurm")
    assert job.checkpointable and job.checkpoint_s == 120.0
    assert job.requeueable
    assert job.elapsed_s == 3600.0 and job.remaining_s == 3 * 3600.0


def test_no_checkpoint_signal_means_not_checkpointable() -> None:
    job = to_domain(make_job(requeue=False), JobPolicy(Tier.PREEMPTIBLE), NOW)
    assert not job.checkpointable and not job.requeueable
    assert job.checkpoint_s == 60.0  # the domain default, unused


def test_times_of_unlimited_pending_completed_and_overdue_jobs() -> None:
    policy = JobPolicy(Tier.FLEX_10)
    unlimited = to_domain(make_job(time_limit_s=None, end_time=NOW + timedelta(days=365)), policy, NOW)
    assert unlimited.remaining_s is None and unlimited.elapsed_s == 3600.0
    # a pending job with a backfill estimate: nothing elapsed, its whole limit ahead
    pending = to_domain(make_job(state="PENDING", start_time=NOW + timedelta(hours=1)), policy, NOW)
    assert pending.elapsed_s == 0.0 and pending.remaining_s == 4 * 3600.0
    done = to_domain(make_job(state="COMPLETED", end_time=NOW - timedelta(minutes=30)), policy, NOW)
    assert done.elapsed_s == 1800.0 and done.remaining_s == 0.0
    overdue = to_domain(make_job(end_time=NOW - timedelta(seconds=5)), policy, NOW)  # past its end, not yet killed
    assert overdue.remaining_s == 0.0
    clock_skew = to_domain(make_job(start_time=NOW + timedelta(seconds=3)), policy, NOW)
    assert clock_skew.elapsed_s == 0.0


@pytest.mark.parametrize("version", ["22.05", "23.11", "24.05"])
def test_every_fixture_job_maps_to_a_valid_domain_job(version: str) -> None:
    jobs = parse_squeue((FIXTURES / f"slurm-{version}" / "squeue.json").read_bytes())
    r = resolver()
    now = max(j.start_time for j in jobs if j.start_time) + timedelta(minutes=10)
    domain = {j.job_id: to_domain(j, r.resolve(j), now) for j in jobs}
    assert len(domain) == len(jobs)
    if version == "22.05":
        assert domain["3"].state is JobState.PENDING  # sbatch --hold: never ran
        assert domain["2"].state is JobState.SUSPENDED and domain["2"].remaining_s is None
        assert domain["1"].tier is Tier.FLEX_25 and not domain["1"].checkpointable
    else:
        assert domain["2040"].state is JobState.STOPPED  # requeue-held after running
        assert domain["2040"].tier is Tier.PREEMPTIBLE and domain["2040"].checkpoint_s == 300.0
        assert domain["2030"].state is JobState.COMPLETED
        assert domain["2001"].checkpointable and domain["2001"].gpus == 32
        assert domain["2060"].tier is Tier.CRITICAL  # invalid tags: no rule, default


# ---------------------------------------------------------------------------------------- nodes


def test_nodes_to_domain_tells_whose_drain_it_is() -> None:
    nodes = nodes_to_domain([
        SlurmNode("n1", "IDLE", ("DRAIN",), "dcflex ev-42", 8, ("batch",)),
        SlurmNode("n2", "MIXED", ("DRAIN",), "kernel update", 8, ("batch",)),
        SlurmNode("n3", "ALLOCATED", (), "dcflex ev-41", 8, ("batch",)),  # reason left over, no drain
        SlurmNode("n4", "DOWN", ("NOT_RESPONDING",), "not responding", 4, ()),
    ])
    assert [(n.name, n.state, n.gpus, n.drained_by_gateway, n.drained_by_other) for n in nodes] == [
        ("n1", "idle", 8, True, False),
        ("n2", "mixed", 8, False, True),
        ("n3", "allocated", 8, False, False),
        ("n4", "down", 4, False, False),
    ]


def test_fixture_nodes() -> None:
    (vm,) = nodes_to_domain(parse_sinfo((FIXTURES / "slurm-22.05" / "sinfo-draining.json").read_bytes()))
    assert vm.drained_by_gateway and not vm.drained_by_other and vm.gpus == 8
    nodes = {n.name: n for n in nodes_to_domain(parse_sinfo((FIXTURES / "slurm-23.11" / "sinfo.json").read_bytes()))}
    assert nodes["gpu010"].drained_by_gateway and nodes["gpu011"].drained_by_gateway
    assert nodes["gpu009"].drained_by_other and nodes["gpu012"].drained_by_other
    assert not any(n.drained_by_gateway or n.drained_by_other for name, n in nodes.items()
                   if name not in {"gpu009", "gpu010", "gpu011", "gpu012"})
