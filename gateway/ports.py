"""Ports: the small interfaces the core talks through. The core imports these, never adapters.

A scheduler adapter (Slurm, Ray, the simulated cluster) implements ``SchedulerPort``; a power
source implements ``PowerMeter``; a protocol edge (OpenADR 2.0b today) implements ``VenPort`` and hands
events to an ``EventHandler``, reading what it reports from a ``SiteFeed``; operators' outputs (MQTT,
InfluxDB) implement ``Sink``. ``Clock`` lives in ``gateway.clock``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from gateway.domain import Action, ClusterSnapshot, Directive, GridEvent, OptDecision, Plan

if TYPE_CHECKING:
    from gateway.planner import PlannerPolicy

Facts = Mapping[str, object]
"""What an adapter reports about a command it carried out, beyond success: e.g. for a checkpoint-then-stop
``acknowledged`` (false: work since the job's last checkpoint is probably lost), ``checkpoint_path``,
``waited_s`` and ``note``. The executor journals them with the command and alerts on a stop that was
not acknowledged; a restarted gateway hands them back through ``Recall``."""


@dataclass(frozen=True, slots=True)
class Recall:
    """What the journal remembers of the gateway's own changes, handed to the scheduler once at start-up.

    ``caps``: GPU power limits (watts by job id) set and not lifted. ``in_force``: every shed command
    done (or possibly sent) and not undone, oldest first. ``facts``: what ``apply`` reported for those
    of them that reported anything, by action key."""

    caps: Mapping[str, float] = field(default_factory=dict)
    in_force: tuple[Action, ...] = ()
    facts: Mapping[str, Facts] = field(default_factory=dict)


class SchedulerPort(Protocol):
    """A job scheduler the gateway can read and act on.

    ``apply`` must be idempotent for a given ``action.key`` (applying a done action again changes
    nothing) and must raise ``AdapterError`` subclasses only. ``describe`` says, without doing it,
    which commands ``apply`` would run: the dry-run mode prints it. ``apply`` may return ``Facts``
    about what happened. ``recall`` hands over what the journal remembers after a restart.
    """

    name: str

    async def snapshot(self) -> ClusterSnapshot: ...

    async def apply(self, action: Action) -> Facts | None: ...

    def prepare(self, actions: Sequence[Action]) -> None:
        """Told of a batch of commands just before they are applied (some concurrently, some waiting for a
        free slot): a scheduler whose commands wait on the job (a checkpoint to be written) may start every
        such wait now, so the batch takes as long as the slowest job, not the sum of waves. Must not fail:
        ``apply`` does the work either way."""
        ...

    def describe(self, action: Action) -> list[str]: ...

    def recall(self, memory: Recall) -> None:
        """The gateway's own changes still in force, from its journal (``Recall``). A scheduler that cannot
        read them back (Slurm's power limits, a Ray job's acknowledged checkpoint, a Serve deployment's
        size before the gateway scaled it) takes them as its own memory again; one that reads them (the
        simulated cluster) has nothing to learn."""
        ...


class Planner(Protocol):
    """What chooses an event's commands: ``gateway.planner.plan`` in production; the replay simulator swaps in
    simpler strategies (pause by priority, one cap for all, pause everything) to compare against it. Pure:
    equal inputs give equal plans, and it never touches a critical job."""

    def __call__(self, directive: Directive, snapshot: ClusterSnapshot, policy: PlannerPolicy, now: datetime) -> Plan:
        ...


class PowerMeter(Protocol):
    """The site's measured power in kW (IT load plus whatever the meter sees)."""

    async def read_kw(self) -> float: ...


class EventHandler(Protocol):
    """Receives translated OpenADR events from the VEN and answers each delivery."""

    async def on_event(self, event: GridEvent) -> OptDecision: ...

    async def on_cancel(self, event_id: str, reason: str) -> None: ...


class SiteFeed(Protocol):
    """What the site tells the VTN besides its answers, read by the VEN when a report is due: the site's power
    now (None: no reading yet), and, when ``announces_drops``, every drop announced in advance (notice id →
    drop time and kW, 0 once withdrawn). Must not block: it is read inside the VEN's report cycle."""

    announces_drops: bool

    def site_kw(self) -> float | None: ...

    def announced_drops(self) -> Mapping[str, tuple[datetime, float]]: ...


class VtnAnswers(Protocol):
    """What the core tells the VTN after its first answer to an event: an operator's later opt-out of one
    revision of it. Raises ``AdapterUnavailable`` (the VTN cannot be told now) or ``ProtocolError``."""

    async def opt_out(self, event_id: str, revision: int, reason: str) -> None: ...


class VenPort(VtnAnswers, Protocol):
    """A connection to one VTN, whatever the protocol: it hands the VTN's events to an ``EventHandler`` and
    answers them with its decisions, reports what a ``SiteFeed`` tells it, and carries later opt-outs.

    ``start`` registers (raising ``AdapterUnavailable`` when the VTN cannot be reached or refuses, ``ConfigError``
    when its own credentials cannot be read); ``run`` keeps it registered (retrying with back-off) until ``stop``
    or cancellation; ``stop`` lets what is in flight finish, bounded, and is safe to call twice. ``refused`` counts
    the VTN's messages refused as malformed or hostile, by kind (``GET /status`` shows it)."""

    @property
    def running(self) -> bool: ...

    @property
    def registration_id(self) -> str | None: ...

    @property
    def refused(self) -> Mapping[str, int]: ...

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


class OperatorControl(Protocol):
    """What operators may ask of a running gateway from outside (the MQTT override topic).

    Each call returns a one-line answer for the reply topic, or raises ``OverrideRefused`` saying
    why it cannot be done (unknown event, already over, ...). ``pause_actions`` stops the gateway
    from sending new shed commands until ``resume_actions``; undoing what was done is never paused,
    so no job stays paused past its event.
    """

    async def opt_out(self, event_id: str, reason: str) -> str: ...

    async def pause_actions(self, reason: str) -> str: ...

    async def resume_actions(self, reason: str) -> str: ...


class Sink(Protocol):
    """An operators' output: receives lifecycle records, alerts and measurements."""

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None: ...


class ServiceSink(Sink, Protocol):
    """A sink with a connection of its own (MQTT, the time-series DB): ``run()`` keeps it up until
    cancelled, ``aclose()`` flushes what is waiting (to the service, or to the outbox) and
    disconnects, ``stats()`` is what ``GET /status`` shows of it."""

    async def run(self) -> None: ...

    async def aclose(self) -> None: ...

    def stats(self) -> Mapping[str, object]: ...
