"""``squeue --json`` and ``sinfo --json`` → ``SlurmJob`` / ``SlurmNode``, for every Slurm JSON format in use.

Slurm changed its JSON twice in the versions sites run:

- 22.05 (Debian 12's ``slurm-wlm``; plugin ``openapi/v0.0.38``): ``job_state`` is one string, times
  and ``time_limit`` (minutes) are plain integers (``0`` = unset, ``null`` = unlimited),
  ``array_task_id`` is ``null`` outside arrays; ``sinfo --json`` lists ``nodes`` with a lower-case
  ``state`` plus ``state_flags``.
- 23.02 (``data_parser/v0.0.39``): counters become ``{"set", "infinite", "number"}`` objects; times
  stay integers; ``job_state`` is still a string; ``sinfo --json`` lists ``sinfo`` entries (one per
  partition and node group) instead of nodes.
- 23.11 / 24.05 (``data_parser/v0.0.40`` / ``v0.0.41``): ``job_state`` is a list (base state, then
  flags such as ``COMPLETING``), times are ``{"set", "infinite", "number"}`` objects too, ``hold``
  is a boolean, ``job_resources`` is reshaped.

Rather than branch on ``meta``'s version, every field is read by its shape, so a minor release that
moves one field from integer to object still parses. Unknown fields are ignored. A field of the wrong
shape makes that one job (or node) be skipped, logged on ``dcflex.adapters.slurm`` and counted in
``ParseResult.skipped``; a document that is not JSON, not the expected shape, or that carries Slurm's own
``errors`` and no data raises ``AdapterError`` naming the path of the bad part.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from adapters.slurm.fields import FieldError, gpu_count, kind, read_hosts, read_obj, read_str, read_strings
from adapters.slurm.gres import gpus_in_gres, gpus_in_tres
from adapters.slurm.jobrecord import BASE_JOB_STATES, job_from_json
from adapters.slurm.jsonstream import JsonSyntaxError, StreamedObject
from adapters.slurm.model import SlurmJob, SlurmNode
from gateway.exceptions import AdapterError

__all__ = [
    "BASE_JOB_STATES", "DocumentInfo", "ParseResult", "SlurmJson",
    "parse_sinfo", "parse_sinfo_result", "parse_squeue", "parse_squeue_result",
]

log = logging.getLogger("dcflex.adapters.slurm")
T = TypeVar("T")
SlurmJson = str | bytes | bytearray | memoryview | Mapping[str, object] | Iterable[bytes]

_MAX_LOGGED = 20
# Per-node, per-core allocation detail inside ``job_resources`` (22.05, 24.05): the bulk of a large job's
# record and never read here, so a large record is decoded without it (see ``StreamedObject``).
_UNREAD_JOB_LISTS = ("allocated_nodes", "allocation")


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """Where a document came from: the command, Slurm's release and the JSON plugin that wrote it."""

    command: str
    slurm_release: str = ""
    plugin: str = ""  # "openapi/v0.0.38", "data_parser/v0.0.40", ...


@dataclass(frozen=True, slots=True)
class ParseResult(Generic[T]):
    """The records that parsed, how many were skipped and why (``"<path>: <problem>"``)."""

    items: tuple[T, ...]
    skipped: int
    problems: tuple[str, ...]
    info: DocumentInfo


# ----------------------------------------------------------------------------------------- public


def parse_squeue(data: SlurmJson) -> list[SlurmJob]:
    """The jobs in ``squeue --json`` output (bytes, text, chunks of bytes, or the decoded object)."""
    return list(parse_squeue_result(data).items)


def parse_sinfo(data: SlurmJson) -> list[SlurmNode]:
    """The nodes in ``sinfo --json`` (or ``scontrol show nodes --json``) output, one per node name."""
    return list(parse_sinfo_result(data).items)


def parse_squeue_result(data: SlurmJson, *, command: str = "squeue --json") -> ParseResult[SlurmJob]:
    """Like ``parse_squeue``, also saying which jobs were skipped and why, and what wrote the document.

    A skipped job is one the gateway cannot see: the adapter should surface ``skipped`` to operators
    (it would otherwise be neither planned for nor protected). ``command`` only labels messages.
    """
    jobs: list[SlurmJob] = []
    problems: list[str] = []
    doc = _Document(data, ("jobs",), command, elide=_UNREAD_JOB_LISTS)
    dates: dict[int, datetime] = {}  # one datetime per distinct second in this document (see job_from_json)
    for _key, index, obj in doc.elements():
        path = f"$.jobs[{index}]"
        try:
            jobs.append(job_from_json(obj, path, dates))
        except FieldError as bad:
            _skip(command, "job", bad, problems)
    info = doc.finish(len(jobs))
    return ParseResult(tuple(jobs), len(problems), tuple(problems), info)


def parse_sinfo_result(data: SlurmJson, *, command: str = "sinfo --json") -> ParseResult[SlurmNode]:
    """Like ``parse_sinfo``, with skipped entries and document info; a node that ``sinfo`` lists under
    several partitions (23.02+ prints one entry per partition and state group) appears once."""
    merged: dict[str, _NodeAcc] = {}
    problems: list[str] = []
    doc = _Document(data, ("nodes", "sinfo"), command)
    for key, index, obj in doc.elements():
        path = f"$.{key}[{index}]"
        try:
            for acc in (_node(obj, path) if key == "nodes" else _sinfo_entry(obj, path)):
                seen = merged.get(acc.name)
                if seen is None:
                    merged[acc.name] = acc
                else:
                    seen.partitions.extend(p for p in acc.partitions if p not in seen.partitions)
        except FieldError as bad:
            _skip(command, "node entry", bad, problems)
    info = doc.finish(len(merged))
    nodes = tuple(SlurmNode(a.name, a.state, a.flags, a.reason, a.gpus, tuple(a.partitions)) for a in merged.values())
    return ParseResult(nodes, len(problems), tuple(problems), info)


# --------------------------------------------------------------------------------------- document


class _Document:
    """The top level: streams the records, then checks ``errors`` and reads ``meta``."""

    def __init__(self, data: SlurmJson, keys: tuple[str, ...], command: str, elide: tuple[str, ...] = ()) -> None:
        self.command = command
        self.keys = keys
        self.elide = elide
        self.header: dict[str, object] = {}
        self.found: str | None = None
        self._data = data

    def elements(self) -> Iterator[tuple[str, int, object]]:
        data = self._data
        if isinstance(data, Mapping):
            yield from self._from_mapping(data)
            return
        if isinstance(data, bytes | bytearray | memoryview | str) and not len(data):
            raise AdapterError(f"{self.command}: empty output", adapter="slurm")
        stream = StreamedObject(data, self.keys, elide=self.elide)
        try:
            yield from stream.items()
        except JsonSyntaxError as exc:
            raise AdapterError(f"{self.command}: {exc}", adapter="slurm") from exc
        finally:
            self.header, self.found = stream.header, stream.found

    def _from_mapping(self, data: Mapping[str, object]) -> Iterator[tuple[str, int, object]]:
        for key, value in data.items():
            if key in self.keys and self.found is None:
                self.found = str(key)
                if not isinstance(value, list):
                    raise AdapterError(f"{self.command}: expected a list at $.{key}", adapter="slurm")
                for index, obj in enumerate(value):
                    yield str(key), index, obj
            else:
                self.header[str(key)] = value

    def finish(self, count: int) -> DocumentInfo:
        cmd = self.command
        errors = self.header.get("errors")
        messages = [_error_text(e) for e in errors] if isinstance(errors, list) else []
        if messages and not count:
            raise AdapterError(f"{cmd}: Slurm reported: {'; '.join(messages)} at $.errors", adapter="slurm")
        for message in messages:
            log.warning("%s: Slurm reported an error alongside its data: %s", cmd, message)
        warnings = self.header.get("warnings")
        for w in warnings if isinstance(warnings, list) else ():
            log.warning("%s: Slurm warned: %s", cmd, _error_text(w))
        if self.found is None:
            where = " or ".join(f"$.{k}" for k in self.keys)
            raise AdapterError(f"{cmd}: no list of {'/'.join(self.keys)} at {where}", adapter="slurm")
        return _info(cmd, self.header.get("meta"))


def _error_text(e: object) -> str:
    if isinstance(e, dict):
        text = e.get("description") or e.get("error") or ""
        code = e.get("error_number", e.get("errno"))
        return f"{text} (error {code})" if code not in (None, 0) else str(text or e)
    return str(e)


def _info(command: str, meta: object) -> DocumentInfo:
    if not isinstance(meta, dict):
        return DocumentInfo(command)
    plugin = meta.get("plugin") or meta.get("plugins") or {}
    slurm = meta.get("slurm") or meta.get("Slurm") or {}
    name = ""
    if isinstance(plugin, dict):
        name = str(plugin.get("data_parser") or plugin.get("type") or "")
    release = ""
    if isinstance(slurm, dict):
        release = str(slurm.get("release") or "")
        version = slurm.get("version")
        if not release and isinstance(version, dict):
            release = ".".join(str(version.get(k, "")) for k in ("major", "minor", "micro"))
    return DocumentInfo(command, release, name)


def _skip(command: str, what: str, bad: FieldError, problems: list[str]) -> None:
    problems.append(f"{bad.path}: {bad.message}")
    if len(problems) <= _MAX_LOGGED:
        log.warning("%s: skipping a %s: %s at %s", command, what, bad.message, bad.path)
    elif len(problems) == _MAX_LOGGED + 1:
        log.warning("%s: more %ss skipped; not logging each (see ParseResult.problems)", command, what)


# ----------------------------------------------------------------------------------------- nodes


@dataclass(slots=True)
class _NodeAcc:
    name: str
    state: str
    flags: tuple[str, ...]
    reason: str
    gpus: int
    partitions: list[str]


def _node_state(v: object, j: dict[str, object], path: str) -> tuple[str, tuple[str, ...]]:
    if type(v) is str and v:  # 22.05: "mixed" plus "state_flags": ["DRAIN"]
        return v.upper(), tuple(f.upper() for f in read_strings(j, "state_flags", path))
    if type(v) is list and v and all(type(x) is str for x in v):  # 23.x+: ["IDLE", "DRAIN"]
        return v[0].upper(), tuple(x.upper() for x in v[1:])
    raise FieldError(f"{path}.state", f"expected a state name or a list of them, got {kind(v)}")


def _node_gpus(gres: str, tres: str, path: str) -> int:
    n = gpu_count(gpus_in_gres, gres, path, "gres")
    if n is None:
        n = gpu_count(gpus_in_tres, tres, path, "tres")
    return n or 0


def _node(obj: object, path: str) -> list[_NodeAcc]:
    """One entry of a ``nodes`` list (22.05 ``sinfo --json``, ``scontrol show nodes --json``)."""
    if type(obj) is not dict:
        raise FieldError(path, f"expected an object, got {kind(obj)}")
    j: dict[str, object] = obj
    name = read_str(j, "name", path)
    if not name:
        raise FieldError(f"{path}.name", "missing node name")
    state, flags = _node_state(j.get("state"), j, path)
    gpus = _node_gpus(read_str(j, "gres", path), read_str(j, "tres", path), path)
    return [_NodeAcc(name, state, flags, read_str(j, "reason", path), gpus, list(read_strings(j, "partitions", path)))]


def _sinfo_entry(obj: object, path: str) -> list[_NodeAcc]:
    """One entry of ``sinfo --json`` (23.02+): a group of nodes sharing a partition and a state."""
    if type(obj) is not dict:
        raise FieldError(path, f"expected an object, got {kind(obj)}")
    j: dict[str, object] = obj
    state, flags = _node_state(read_obj(j, "node", path).get("state"), {}, f"{path}.node")
    nodes_path = f"{path}.nodes"
    names = [h for expr in read_strings(read_obj(j, "nodes", path), "nodes", nodes_path)
             for h in read_hosts(expr, nodes_path, "nodes")]
    gres = read_obj(j, "gres", path)
    gpus = _node_gpus(read_str(gres, "total", f"{path}.gres"), "", path)
    reason = read_str(read_obj(j, "reason", path), "description", f"{path}.reason")
    part = read_str(read_obj(j, "partition", path), "name", f"{path}.partition")
    parts = [part] if part else []
    return [_NodeAcc(n, state, flags, reason, gpus, list(parts)) for n in names]
