"""The journal: dcflex's durable memory (SQLite in WAL mode by default).

Every event delivery, decision, state transition and command is written here before it is acted
on, so a restarted gateway continues where the last process stopped: it never re-sends a command
that was done and never forgets to undo one.
"""

from gateway.journal.codec import action_from_dict, action_to_dict, directive_from_dict, directive_to_dict
from gateway.journal.outbox import Outbox
from gateway.journal.store import ActionRecord, EventRecord, Journal

__all__ = [
    "ActionRecord",
    "EventRecord",
    "Journal",
    "Outbox",
    "action_from_dict",
    "action_to_dict",
    "directive_from_dict",
    "directive_to_dict",
]
