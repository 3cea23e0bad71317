"""A power meter that estimates site power from the scheduler's snapshot and the power model.

For sites without a metered feed (or until one is configured), the site's draw is modelled from
what runs where: every GPU's idle draw, each node's base draw, and each job's draw above idle at
its cap. It is the same model the planner uses, so plans and their measured effect agree.
"""

from __future__ import annotations

from gateway.ports import SchedulerPort
from gateway.power.model import PowerModel


class ModelledMeter:
    """``PowerMeter`` from a scheduler snapshot; ``total_gpus``/``nodes`` size the idle floor."""

    def __init__(self, scheduler: SchedulerPort, model: PowerModel, *, nodes: int, gpus_per_node: int) -> None:
        self._scheduler = scheduler
        self._model = model
        self._nodes = nodes
        self._gpus = nodes * gpus_per_node

    async def read_kw(self) -> float:
        snapshot = await self._scheduler.snapshot()
        if snapshot.site_kw is not None:
            return snapshot.site_kw
        floor = self._model.idle_floor_kw(self._gpus, self._nodes)
        return floor + sum(self._model.job_kw(j) for j in snapshot.jobs)
