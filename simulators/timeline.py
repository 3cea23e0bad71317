"""A ``Sink`` that prints the engine's records as a readable timeline, stamped with simulated time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from rich.console import Console

from gateway.clock import Clock

_STYLE = {"alert": "bold red", "opt": "bold cyan", "plan": "cyan", "state": "magenta", "target_reached": "bold green"}


class Timeline:
    def __init__(self, console: Console, clock: Clock, start: datetime) -> None:
        self._console = console
        self._clock = clock
        self._start = start
        self.lines: list[str] = []

    def _print(self, text: str, style: str = "") -> None:
        stamp = f"T+{(self._clock.now() - self._start).total_seconds() / 60:6.1f} min"
        line = f"{stamp}  {text}"
        self.lines.append(line)
        self._console.print(line, style=style or None)

    def note(self, text: str) -> None:
        self._print(text, "bold")

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        p = payload
        eid = p.get("event_id", "")
        text: str | None = None
        if kind == "opt":
            text = f"event {eid} mod {p.get('modification')}: {p.get('opt')} sent — {p.get('reason')}"
        elif kind == "plan":
            kinds = p.get("by_kind") or {}
            levers = ", ".join(f"{n} {k}" for k, n in kinds.items() if n) if isinstance(kinds, dict) else ""
            text = (f"plan for {eid}: baseline {p.get('baseline_kw')} kW → target {p.get('target_kw')} kW, "
                    f"expected {p.get('expected_kw')} kW ({levers or 'no commands'})")
            if p.get("shortfall_kw"):
                text += f"; shortfall {p.get('shortfall_kw'):.1f} kW: {p.get('shortfall_reason')}"
        elif kind == "notice":
            text = f"advance notice: -{p.get('drop_kw')} kW at {p.get('drop_at')}"
        elif kind == "state":
            text = f"event {eid} → {p.get('state')} ({p.get('detail')})"
        elif kind == "action":
            nodes = p.get("nodes")
            subject = p.get("job_id") or (",".join(str(n) for n in nodes) if isinstance(nodes, list) else "")
            watts = f" {_num(p.get('watts')):.0f} W" if p.get("watts") else ""
            text = (f"  {p.get('outcome')}: {p.get('kind')}{watts} {subject} [{p.get('tier')}] "
                    f"({_num(p.get('delta_kw')):+.1f} kW)")
        elif kind == "target_reached":
            text = (f"target reached: {_num(p.get('kw')):.1f} kW ≤ {_num(p.get('target_kw')):.1f} kW after "
                    f"{_num(p.get('time_to_target_s')) / 60:.1f} min")
        elif kind == "alert":
            text = f"ALERT {p.get('code')}: {p.get('message')}"
        elif kind == "resumed":
            text = f"event {eid} resumed from the journal in state {p.get('state')}"
        if text is not None:
            self._print(text, _STYLE.get(kind, ""))


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
