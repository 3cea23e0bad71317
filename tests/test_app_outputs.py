"""The composition root keeps operators' outputs running: an output that fails is alerted and
restarted, never allowed to end the gateway (which would strand the event and its jobs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from gateway.app import Gateway, power_model
from gateway.clock import ManualClock
from gateway.config import DcflexConfig
from simulators.cluster import SimulatedCluster
from simulators.workloads import demo_mix
from tests.gateway.engine.conftest import T0, Collect


class FlakyOutput:
    """An output whose connection loop dies on an unexpected error the first time, then runs."""

    def __init__(self) -> None:
        self.runs = 0

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        return None

    async def run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise OSError(9, "Bad file descriptor")  # what a socket torn down under a library looks like

    async def aclose(self) -> None:
        return None

    def stats(self) -> Mapping[str, object]:
        return {"runs": self.runs}


async def test_a_failing_output_is_alerted_and_restarted(tmp_path: Path) -> None:
    cfg = DcflexConfig.model_validate({"journal": {"path": str(tmp_path / "j.sqlite3")}, "api": {"enabled": False}})
    clock = ManualClock(T0)
    model = power_model(cfg)
    cluster = SimulatedCluster(clock, model, 4, 8, demo_mix(7)[:4], seed=7)
    sink = Collect()
    gateway = Gateway(cfg, scheduler=cluster, meter=cluster, clock=clock, model=model, sinks=[sink])
    flaky = FlakyOutput()
    gateway.outputs["flaky"] = flaky
    await gateway._supervise("flaky", flaky)  # returns once the output's run ends normally
    assert flaky.runs == 2
    (alert,) = sink.of("alert")
    assert alert["code"] == "output_failed" and alert["severity"] == "error"
    assert "the flaky output stopped on an unexpected error (OSError: [Errno 9] Bad file descriptor)" in alert["message"]
    assert gateway.status()["outputs"] == {"flaky": {"runs": 2}}
    gateway.outbox.close()
    gateway.journal.close()


@pytest.mark.parametrize("enabled", [(), ("mqtt",), ("mqtt", "influxdb")])
def test_outputs_are_built_from_the_configuration(tmp_path: Path, enabled: tuple[str, ...]) -> None:
    cfg = DcflexConfig.model_validate({"journal": {"path": str(tmp_path / "j.sqlite3")},
                                       "sinks": {name: {"enabled": True} for name in enabled}})
    clock = ManualClock(T0)
    model = power_model(cfg)
    cluster = SimulatedCluster(clock, model, 4, 8, demo_mix(7)[:4], seed=7)
    gateway = Gateway(cfg, scheduler=cluster, meter=cluster, clock=clock, model=model)
    names = {"mqtt": "mqtt", "influxdb": "tsdb"}
    assert sorted(gateway.outputs) == sorted(names[n] for n in enabled)
    assert all(s in gateway.engine.out.sinks for s in gateway.outputs.values())
    gateway.outbox.close()
    gateway.journal.close()


def test_the_gateway_serves_the_directive_store_it_was_given_even_an_empty_one(tmp_path: Path) -> None:
    from gateway.jobchannel import CheckpointAcks, JobDirectives

    cfg = DcflexConfig.model_validate({"journal": {"path": str(tmp_path / "j.sqlite3")}})
    clock = ManualClock(T0)
    model = power_model(cfg)
    cluster = SimulatedCluster(clock, model, 4, 8, demo_mix(7)[:4], seed=7)
    directives, acks = JobDirectives(clock), CheckpointAcks()  # empty: falsy, yet the ones the adapter writes to
    gateway = Gateway(cfg, scheduler=cluster, meter=cluster, clock=clock, model=model, directives=directives, acks=acks)
    assert gateway.directives is directives and gateway.acks is acks
    gateway.outbox.close()
    gateway.journal.close()


async def test_the_api_knows_a_job_by_the_cluster_read_at_most_every_30_s(tmp_path: Path) -> None:
    cfg = DcflexConfig.model_validate({"journal": {"path": str(tmp_path / "j.sqlite3")}, "api": {"enabled": False}})
    clock = ManualClock(T0)
    model = power_model(cfg)
    cluster = SimulatedCluster(clock, model, 4, 8, demo_mix(7)[:4], seed=7)
    reads = 0
    snapshot = cluster.snapshot

    async def counted() -> object:
        nonlocal reads
        reads += 1
        return await snapshot()

    cluster.snapshot = counted  # type: ignore[method-assign]
    gateway = Gateway(cfg, scheduler=cluster, meter=cluster, clock=clock, model=model)
    running = {job.job_id for job in (await snapshot()).jobs}
    assert running and all([await gateway.knows_job(j) for j in running])
    assert not await gateway.knows_job("ghost") and not await gateway.knows_job("ghost-2")
    assert reads == 1  # one read answered them all
    await clock.jump(31)
    assert not await gateway.knows_job("ghost")
    assert reads == 2
    assert gateway.status()["vtn_refused"] == {}
    gateway.outbox.close()
    gateway.journal.close()
