"""Operators' override commands from ``<prefix>/<site>/override/<identity>``: check, run, answer.

MQTT 3.1.1 does not tell a subscriber who published a message, so the identity is the topic's last
level and the broker makes it unforgeable: an ACL ``pattern write <prefix>/<site>/override/%c`` lets
each client publish only under its own client id (see ``docs/mqtt.md``). Here a command is refused,
with a reason precise enough to fix it, when it is retained, too large, not a JSON object, from an
identity outside ``override_allow``, or not a valid ``Override``; an accepted one is handed to the
``OperatorControl`` and answered with its reply (or its ``OverrideRefused`` message).

Every command that is not a repeat is reported to ``on_override`` (the gateway journals it), and each
refusal also to ``on_problem("override_refused", ...)`` (the gateway alerts). A repeated
``(identity, request_id)`` — a QoS 1 re-delivery, or an operator's retry — is answered again from
memory and not run twice.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from gateway.exceptions import OverrideRefused
from gateway.ports import OperatorControl
from gateway.sinks.mqtt.payloads import Override

__all__ = ["OverrideHandler", "OverrideHook", "OverrideOutcome", "ProblemHook", "parse_override"]

log = logging.getLogger(__name__)

OverrideHook = Callable[[str, Mapping[str, object], bool, str], Awaitable[None]]
"""``on_override(identity, command, accepted, answer)``: one handled command, for the journal.
``command`` is the validated command (``Override.model_dump``), else the JSON object as received,
else ``{"raw": <first 200 characters>}``."""

ProblemHook = Callable[[str, str], Awaitable[None]]
"""``on_problem(code, message)``: something operators should be alerted to (codes ``mqtt_unavailable``,
``mqtt_recovered``, ``override_refused``)."""

_RAW_EXCERPT = 200


@dataclass(frozen=True)
class OverrideOutcome:
    """What became of one override message; ``repeat`` marks an answer given again from memory."""

    identity: str
    request_id: str | None
    command: Mapping[str, object]
    accepted: bool
    answer: str
    repeat: bool = False

    @property
    def command_name(self) -> str | None:
        name = self.command.get("command")
        return name if isinstance(name, str) else None


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def _check_size(payload: bytes, max_bytes: int) -> None:
    if len(payload) > max_bytes:
        raise OverrideRefused(f"payload is {len(payload)} bytes; at most {max_bytes} are accepted "
                              "(sinks.mqtt.max_override_bytes)")


def _read_json(payload: bytes) -> tuple[object, str | None]:
    """The decoded JSON value, or ``(None, reason)``."""
    try:
        return orjson.loads(payload), None
    except orjson.JSONDecodeError as exc:
        return None, f"payload is not valid JSON: {exc}"


def parse_override(payload: bytes, max_bytes: int) -> Override:
    """Validate one override payload (size, JSON, model); raise ``OverrideRefused`` saying what is wrong."""
    _check_size(payload, max_bytes)
    value, problem = _read_json(payload)
    if problem is not None:
        raise OverrideRefused(problem)
    return _validate(value)


def _validate(value: object) -> Override:
    if not isinstance(value, dict):
        raise OverrideRefused(f"payload must be a JSON object, not {type(value).__name__}")
    try:
        return Override.model_validate(value)
    except ValidationError as exc:
        raise OverrideRefused(_validation_reason(exc)) from None


class OverrideHandler:
    """Turns override messages into ``OperatorControl`` calls and answers (see the module docstring)."""

    def __init__(
        self,
        *,
        allow: Iterable[str],
        max_bytes: int,
        control: OperatorControl | None,
        on_override: OverrideHook | None = None,
        on_problem: ProblemHook | None = None,
        remember: int = 256,
    ) -> None:
        self.allow = frozenset(a for a in allow if a)
        self.max_bytes = max_bytes
        self.control = control
        self.on_override = on_override
        self.on_problem = on_problem
        self._answers: OrderedDict[tuple[str, str], OverrideOutcome] = OrderedDict()
        self._remember = remember
        self.handled = 0
        self.refused = 0

    async def handle(self, identity: str, payload: bytes, *, retained: bool = False) -> OverrideOutcome:
        """Check and run one command; never raises for a bad command (the outcome says why)."""
        command: Mapping[str, object] = {"raw": payload[:_RAW_EXCERPT].decode("utf-8", "replace")}
        request_id: str | None = None
        try:
            if retained:
                raise OverrideRefused("retained override commands are ignored (one would run again on every reconnect): "
                                      "publish it with retain=false")
            _check_size(payload, self.max_bytes)
            value, problem = _read_json(payload)
            if isinstance(value, dict):
                command = value
                rid = value.get("request_id")
                request_id = rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None
            if identity not in self.allow:
                raise OverrideRefused(f"client {identity!r} may not send overrides (it is not in sinks.mqtt.override_allow)")
            if problem is not None:
                raise OverrideRefused(problem)
            cmd = _validate(value)
            command = cmd.model_dump(exclude_none=True)
            if request_id is not None and (identity, request_id) in self._answers:
                earlier = self._answers[(identity, request_id)]
                self._answers.move_to_end((identity, request_id))
                return OverrideOutcome(identity, request_id, earlier.command, earlier.accepted, earlier.answer, repeat=True)
            answer = await self._run(identity, cmd)
            outcome = OverrideOutcome(identity, request_id, command, True, answer)
        except OverrideRefused as exc:
            outcome = OverrideOutcome(identity, request_id, command, False, str(exc))
        self._remember_outcome(outcome)
        await self._report(outcome)
        return outcome

    async def _run(self, identity: str, cmd: Override) -> str:
        if self.control is None:
            raise OverrideRefused("this gateway takes no override commands (no operator control is wired)")
        reason = f"{cmd.reason} (by {identity})" if cmd.reason else f"by {identity}"
        try:
            if cmd.command == "opt_out":
                assert cmd.event_id is not None  # the model's validator guarantees it
                return await self.control.opt_out(cmd.event_id, reason)
            if cmd.command == "pause":
                return await self.control.pause_actions(reason)
            return await self.control.resume_actions(reason)
        except OverrideRefused:
            raise
        except Exception as exc:  # the control's bug must not kill the listener; the operator hears of it
            log.exception("override %s from %s failed", cmd.command, identity)
            raise OverrideRefused(f"the gateway failed to carry out {cmd.command}: {type(exc).__name__}: {exc}") from exc

    def _remember_outcome(self, outcome: OverrideOutcome) -> None:
        if outcome.request_id is None:
            return
        self._answers[(outcome.identity, outcome.request_id)] = outcome
        while len(self._answers) > self._remember:
            self._answers.popitem(last=False)

    async def _report(self, outcome: OverrideOutcome) -> None:
        self.handled += 1
        if not outcome.accepted:
            self.refused += 1
            log.warning("override from %r refused: %s", outcome.identity, outcome.answer)
        try:
            if self.on_override is not None:
                await self.on_override(outcome.identity, outcome.command, outcome.accepted, outcome.answer)
            if not outcome.accepted and self.on_problem is not None:
                await self.on_problem("override_refused", f"override from {outcome.identity!r} refused: {outcome.answer}")
        except Exception:  # a journal or alert hook's failure is logged; the reply still goes out
            log.exception("override hook failed for %r", outcome.identity)
