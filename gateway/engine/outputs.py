"""The engine's records: journaled first, then handed to every sink (MQTT, the time-series DB).

Also the facts a record carries that are derived from measurements (the mean power achieved over
an event's hold, the shed against the baseline) and the per-job impact at an event's end, so the
engine's loop only says *what* happened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from gateway.clock import Clock
from gateway.domain import Directive, EventState, Job
from gateway.engine.impact import job_impacts
from gateway.engine.run import Run
from gateway.exceptions import DcflexError
from gateway.journal import Journal
from gateway.ports import Sink
from gateway.power import PowerModel
from gateway.power.history import PowerHistory

log = logging.getLogger("dcflex.engine")

_PRUNE_EVERY = timedelta(days=1)


class Outputs:
    """Journal, then sinks; a failing sink never stops the engine."""

    def __init__(self, journal: Journal, clock: Clock, sinks: Sequence[Sink], history: PowerHistory, model: PowerModel,
                 keep_power_days: int) -> None:
        self.journal = journal
        self.clock = clock
        self.sinks = list(sinks)
        self.history = history
        self.model = model
        self.keep_power = timedelta(days=keep_power_days)
        self._pruned: datetime | None = None

    async def emit(self, kind: str, event_id: str, payload: Mapping[str, object]) -> None:
        """Journal a record (power samples go to the per-minute log instead), then hand it to every sink."""
        body = {"at": self.clock.now().isoformat(), "event_id": event_id, **payload}
        if kind != "power":
            self.journal.log(event_id, kind, self.clock.now(), dict(payload))
        for sink in self.sinks:
            try:
                await sink.emit(kind, body)
            except Exception:  # a sink's failure is its own problem; it must never stop an event
                log.exception("sink %r failed on a %s record", sink, kind)

    async def alert(self, event_id: str, code: str, message: str, severity: str = "warning", **facts: object) -> None:
        log.warning("%s: %s", code, message)
        await self.emit("alert", event_id, {"severity": severity, "code": code, "message": message, **facts})

    def state_facts(self, d: Directive | None, state: EventState, detail: str) -> dict[str, object]:
        """A lifecycle record: the state, the target, and the mean measured power over the hold so far."""
        achieved = None
        if d is not None:
            held = self.history.between(d.target_by, min(self.clock.now(), d.end) + timedelta(microseconds=1))
            achieved = round(sum(kw for _, kw in held) / len(held), 3) if held else None
        return {"state": state.value, "detail": detail, "modification": d.modification if d else None,
                "target_kw": d.strictest_kw if d else None, "achieved_kw": achieved}

    def power_facts(self, now: datetime, kw: float, target: float | None, active: Iterable[Run]) -> dict[str, object]:
        """Record the sample in the journal's per-minute power log and say what it means for the event
        in force (the strictest of the active ones)."""
        try:
            self.journal.power.record(now, kw, target)
            if self._pruned is None or now - self._pruned >= _PRUNE_EVERY:
                self.journal.power.prune(now - self.keep_power)
                self._pruned = now
        except DcflexError as exc:
            log.error("cannot record site power: %s", exc)
        runs = sorted(active, key=lambda r: (r.directive.strictest_kw or float("inf"), r.event_id))
        baseline = runs[0].directive.baseline_kw if runs else None
        return {"kw": kw, "target_kw": target, "baseline_kw": baseline,
                "shed_kw": None if baseline is None else round(baseline - kw, 3)}

    async def impacts(self, run: Run, seen: Iterable[Job]) -> None:
        """Each touched job's cost of the event (``gateway.engine.impact``), from the journal's record;
        ``seen`` fills in jobs the run did not keep (e.g. after a restart mid-restore)."""
        entries = self.journal.log_entries(run.event_id, ("action",))
        done = [(datetime.fromisoformat(at), body) for at, _, _, body in entries if body.get("outcome") == "done"]
        known = {j.job_id: j for j in seen}
        known.update(run.jobs)
        d = run.directive
        for impact in job_impacts(done, known, self.model, d.ramp_start, d.end):
            await self.emit("impact", run.event_id, impact.facts())
