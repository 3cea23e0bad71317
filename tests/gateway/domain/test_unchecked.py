"""The one unchecked constructor: what it builds equals what the validating constructor builds, for each of
its three users, and it refuses classes it cannot build safely."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime

import pytest

from adapters.slurm.jobrecord import _new_job
from adapters.slurm.model import SlurmJob
from gateway.domain import Action, ActionKind, Job, JobState, Tier
from gateway.domain.unchecked import unchecked
from gateway.planner.actions import make_action
from simulators._simcore import _fixed_of, _restamp

NOW = datetime(2026, 7, 1, 12, tzinfo=UTC)


def _same(fast: object, checked: object) -> None:
    assert type(fast) is type(checked)
    assert fast == checked and hash(fast) == hash(checked) and repr(fast) == repr(checked)
    assert pickle.loads(pickle.dumps(fast)) == checked
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.job_id = "other"  # type: ignore[attr-defined]


def test_the_planners_actions_equal_validated_ones() -> None:
    args = ("ev/cap/j/250", ActionKind.CAP, NOW, "j", (), 250.0, -1.5, "flex-25", "cap 250 W")
    _same(make_action(*args), Action(*args))
    _same(make_action(*args, 3), Action(*args, 3))  # the trailing default may be given


def test_the_simulated_clusters_restamped_jobs_equal_validated_ones() -> None:
    first = Job(job_id="j", tier=Tier.FLEX_25, gpus=8, nodes=("n1",), state=JobState.RUNNING, workload="average",
                since_checkpoint_s=1.0, elapsed_s=2.0, remaining_s=3.0, lost_s=4.0, scheduler="simulated")
    again = _restamp(_fixed_of(first), 10.0, 20.0, 30.0, 40.0)
    _same(again, dataclasses.replace(first, since_checkpoint_s=10.0, elapsed_s=20.0, remaining_s=30.0, lost_s=40.0))


def test_slurms_job_records_equal_validated_ones() -> None:
    values = ("7", "train", "ada", "ml", "gpu", "normal", "", "RUNNING", "None", ("n1", "n2"), 16, True,
              NOW, NOW, None, 3600.0, None, None, None, None, ("REQUEUED",), False, 0, "7")
    assert len(values) == len(dataclasses.fields(SlurmJob))
    _same(_new_job(*values), SlurmJob(*values))


def test_it_refuses_what_it_cannot_build_safely() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        job_id: str

    @dataclasses.dataclass(slots=True)
    class Mutable:
        job_id: str

    with pytest.raises(TypeError, match="does not keep its fields in slots"):
        unchecked(NoSlots)
    with pytest.raises(TypeError, match="not a frozen dataclass"):
        unchecked(Mutable)
