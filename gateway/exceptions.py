"""Every error dcflex raises on purpose, in one tree.

    DcflexError
    ├── ConfigError          a configuration file or value is wrong (carries every problem found)
    │   └── ScenarioError        a replay scenario file is wrong
    ├── ProtocolError        an OpenADR payload is malformed, hostile or unsupported
    │   └── HostileInput         bytes refused at the intake (a DTD, a size or count past a limit, ...)
    ├── AdapterError         a scheduler, meter or sink did not do what was asked
    │   ├── AdapterTimeout       the call did not finish within its timeout
    │   ├── AdapterUnavailable   the service could not be reached at all
    │   └── CommandFailed        the service answered with a failure (exit code, stderr tail)
    ├── PlanningError        no plan can be built from the inputs (not: a target that cannot be met,
    │                        which is a plan with a shortfall)
    ├── JournalError         the journal cannot be read or written
    └── OverrideRefused      an operator's override command is malformed, not allowed or not possible now

Errors carry the facts an operator needs to act: what failed, where, and what to do next.
"""

from __future__ import annotations

from collections.abc import Sequence


class DcflexError(Exception):
    """Base class of every error dcflex raises on purpose."""


class ConfigError(DcflexError):
    """A configuration is invalid; ``problems`` lists each one as ``(key path, message)``."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  {path}: {msg}" for path, msg in self.problems)
        super().__init__(f"invalid configuration in {source} ({len(self.problems)} problem(s)):\n{lines}")


class ScenarioError(ConfigError):
    """A replay scenario (``dcflex replay``) is invalid; ``problems`` as for ``ConfigError``."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__(source, problems)
        lines = "\n".join(f"  {path}: {msg}" for path, msg in self.problems)
        self.args = (f"invalid scenario {source} ({len(self.problems)} problem(s)):\n{lines}",)


class ProtocolError(DcflexError):
    """An OpenADR payload cannot be accepted; ``field`` names the offending part."""

    def __init__(self, message: str, *, event_id: str | None = None, field: str | None = None) -> None:
        self.event_id = event_id
        self.field = field
        where = f" (event {event_id}" + (f", {field})" if field else ")") if event_id else ""
        super().__init__(message + where)


class HostileInput(ProtocolError):
    """Bytes from a peer refused before any parser that could be harmed saw them.

    ``kind`` is the class of refusal (``doctype``, ``entity``, ``xinclude``, ``processing_instruction``,
    ``encoding``, ``too_large``, ``too_deep``, ``too_many``, ``too_long``, ``not_xml``, ``schema``, ``redirect``,
    ``content_encoding``, ``bad_value``, ``unreadable``):
    operators are alerted once per kind, not once per poll. ``where`` names the place (an element path, a line,
    a header); ``message_type`` the OpenADR message and ``request_id`` its requestID when they could be told.
    """

    def __init__(self, kind: str, message: str, *, where: str = "", message_type: str | None = None,
                 request_id: str | None = None) -> None:
        self.kind = kind
        self.where = where
        self.message_type = message_type
        self.request_id = request_id
        super().__init__(message + (f" at {where}" if where else ""), field=where or None)


class AdapterError(DcflexError):
    """A port implementation failed; subclasses say how."""

    def __init__(self, message: str, *, adapter: str = "", command: Sequence[str] | None = None) -> None:
        self.adapter = adapter
        self.command = tuple(command) if command else ()
        super().__init__(message)


class AdapterTimeout(AdapterError):
    """An outbound call did not finish within its timeout."""

    def __init__(self, message: str, *, adapter: str = "", command: Sequence[str] | None = None,
                 timeout_s: float = 0.0) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"{message} (timed out after {timeout_s:g} s)", adapter=adapter, command=command)


class AdapterUnavailable(AdapterError):
    """The service behind a port cannot be reached."""


class CommandFailed(AdapterError):
    """The service answered, with a failure."""

    def __init__(self, message: str, *, adapter: str = "", command: Sequence[str] | None = None,
                 exit_code: int | None = None, stderr_tail: str = "") -> None:
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        detail = f"{message} (exit code {exit_code})" if exit_code is not None else message
        if stderr_tail:
            detail += f": {stderr_tail}"
        super().__init__(detail, adapter=adapter, command=command)


class PlanningError(DcflexError):
    """The planner was given inputs it cannot plan from."""


class JournalError(DcflexError):
    """The journal cannot be opened, read or written."""


class OverrideRefused(DcflexError):
    """An operator's override (MQTT ``…/override``) is refused; the message is the reply's reason."""
