"""A timeout and retry guard around any scheduler adapter: the edge where outbound calls are bounded.

Every command the gateway sends is bounded by ``timeout_s`` (wall time, because a hung scheduler
hangs in wall time whatever the gateway's clock says). Transient failures (timeouts, an
unreachable service) are retried with exponential backoff; a definite refusal (``CommandFailed``)
is not, because repeating it would only repeat the refusal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from gateway.domain import Action, ClusterSnapshot
from gateway.exceptions import AdapterError, AdapterTimeout, AdapterUnavailable
from gateway.ports import Facts, Recall, SchedulerPort

log = logging.getLogger("dcflex.adapters")
T = TypeVar("T")


class GuardedScheduler:
    """Wraps a ``SchedulerPort`` with per-call timeouts and retries; itself a ``SchedulerPort``."""

    def __init__(self, inner: SchedulerPort, *, timeout_s: float = 30.0, retries: int = 3, backoff_s: float = 0.5) -> None:
        self.inner = inner
        self.name = inner.name
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    async def _guard(self, what: str, command: Sequence[str], call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await call()
            except TimeoutError as exc:
                err: AdapterError = AdapterTimeout(
                    f"{self.name}: {what}", adapter=self.name, command=command, timeout_s=self.timeout_s
                )
                err.__cause__ = exc
            except (AdapterTimeout, AdapterUnavailable) as exc:
                err = exc
            attempt += 1
            if attempt > self.retries:
                raise err
            log.warning("%s (attempt %d of %d); retrying", err, attempt, self.retries + 1)
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))

    async def snapshot(self) -> ClusterSnapshot:
        return await self._guard("snapshot", (), self.inner.snapshot)

    async def apply(self, action: Action) -> Facts | None:
        subject = action.job_id or ",".join(action.nodes)
        return await self._guard(
            f"{action.kind.value} {subject} ({action.key})", self.inner.describe(action), lambda: self.inner.apply(action)
        )

    def describe(self, action: Action) -> list[str]:
        return self.inner.describe(action)

    def prepare(self, actions: Sequence[Action]) -> None:
        self.inner.prepare(actions)

    def recall(self, memory: Recall) -> None:
        self.inner.recall(memory)
