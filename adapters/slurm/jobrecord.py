"""One job record of ``squeue --json`` (any supported Slurm version) → ``SlurmJob``.

This runs once per job, and a 100 000-job cluster is the target (``benchmarks.slurm_parse_bench``:
parse and map to domain jobs in ≤ 2 s), so the shapes Slurm actually prints are read inline: 22.05's
plain integers and strings, and 23.x+'s ``{"set", "infinite", "number"}`` counters and state lists.
Anything else goes through the ``fields`` readers, which accept every documented shape or raise
``FieldError`` with the field's path; the inline reads never decide differently from them, they only
get there sooner.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter

from adapters.slurm.fields import (
    NO_VAL,
    FieldError,
    gpu_count,
    kind,
    read_bool,
    read_hosts,
    read_num,
    read_str,
    read_strings,
    read_time,
)
from adapters.slurm.gres import gpus_in_gres, gpus_in_tres
from adapters.slurm.hostlist import expand_hostlist
from adapters.slurm.model import SlurmJob
from gateway.domain.unchecked import unchecked

__all__ = ["BASE_JOB_STATES", "job_from_json"]

BASE_JOB_STATES = frozenset({
    "PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY",
})
# Each job keeps the one shared string of its state, not the decoder's copy: 100 000 jobs hold a dozen strings.
_BASE_STATE = {s: s for s in BASE_JOB_STATES}
# 22.05 prints only a flag's name when one is set; the base state it implies.
_FLAG_BASE = {
    "REQUEUED": "PENDING", "REQUEUE_HOLD": "PENDING", "REQUEUE_FED": "PENDING", "RESV_DEL_HOLD": "PENDING",
    "SPECIAL_EXIT": "PENDING", "CONFIGURING": "RUNNING", "RESIZING": "RUNNING", "SIGNALING": "RUNNING",
    "STOPPED": "RUNNING", "COMPLETING": "COMPLETING", "STAGE_OUT": "COMPLETING",
}
_HOLD_FLAGS = frozenset({"REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD"})
_HOLD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
_STR_KEYS = ("name", "account", "partition", "qos", "comment", "state_reason", "user_name")
# Every field the hot path reads, fetched in one call (a KeyError sends the record to dict.get).
_KEYS = ("job_id", "job_state", "het_job_id", "array_job_id", *_STR_KEYS, "nodes", "node_count", "time_limit",
         "restart_cnt", "requeue", "submit_time", "start_time", "end_time")  # no "hold" in 22.05
_fields = itemgetter(*_KEYS)
_MAX_TS = 253402300799  # 9999-12-31T23:59:59Z, the last second datetime can hold
_fromtimestamp = datetime.fromtimestamp
_intern = sys.intern


# Every field is read and checked above before it is stored: the domain's one unchecked constructor
# (``gateway.domain.unchecked``) builds the record at half the cost of ``SlurmJob(...)``. ``SlurmJob`` has no
# ``__post_init__`` to skip (``tests/adapters/slurm/test_parse.py`` checks).
_new_job = unchecked(SlurmJob)


@lru_cache(maxsize=8192)
def _hosts(expr: str) -> tuple[str, ...]:
    """Jobs on a cluster share few distinct node lists (most run on one node): expand each once."""
    return expand_hostlist(expr)


# Time limits in seconds by minutes: a cluster has a handful (partition and QOS defaults), so jobs share them.
_LIMIT_S: dict[int, float] = {}


def _limit_s(minutes: int) -> float:
    seconds = minutes * 60.0
    if len(_LIMIT_S) < 4096:
        _LIMIT_S[minutes] = seconds
    return seconds


def _counter(v: dict[str, object]) -> object:
    """The number of a set, finite 23.x+ counter; ``v`` itself otherwise (for ``read_num`` to judge)."""
    if v.get("set") is True and v.get("infinite") is False:
        return v.get("number")
    return v


def _stamp(ts: object, dates: dict[int, datetime], j: dict[str, object], key: str, path: str) -> datetime | None:
    if type(ts) is int and 0 < ts <= _MAX_TS:
        d = dates.get(ts)
        if d is None:
            d = dates[ts] = _fromtimestamp(ts, UTC)
        return d
    return _time(j, key, path)


def _time(j: dict[str, object], key: str, path: str) -> datetime | None:
    v = j.get(key)
    if type(v) is dict:
        v = _counter(v)
    if type(v) is int:
        if 0 < v <= _MAX_TS:
            return _fromtimestamp(v, UTC)
        if v == 0:
            return None
    return read_time(j, key, path)


def _job_state(v: object, path: str) -> tuple[str, tuple[str, ...]]:
    if type(v) is str:
        if v in BASE_JOB_STATES:
            return v, ()
        implied = _FLAG_BASE.get(v)
        if implied is not None:
            return implied, (v,)
        return v, ()
    if type(v) is list and v and all(type(x) is str for x in v):
        states: list[str] = v
        base = next((s for s in states if s in BASE_JOB_STATES), None)
        if base is None:
            return _FLAG_BASE.get(states[0], states[0]), tuple(states)
        return base, tuple(s for s in states if s != base)
    raise FieldError(f"{path}.job_state", f"expected a state name or a list of them, got {kind(v)}")


def _job_id(j: dict[str, object], raw_id: int, het: object, array: object,
            path: str) -> tuple[str, int | None, int | None, int | None, int | None]:
    """Slurm's own notation: ``123``, ``123_4`` (array task), ``123_[5-9]`` (array's pending rest), ``123+0`` (het).

    ``het`` and ``array`` are ``het_job_id`` and ``array_job_id`` as read (23.x+ counters unwrapped)."""
    if not (type(het) is int and 0 <= het < NO_VAL):
        het = read_num(j, "het_job_id", path)
    if not (type(array) is int and 0 <= array < NO_VAL):
        array = read_num(j, "array_job_id", path)
    if het:
        offset = read_num(j, "het_job_offset", path) or 0
        return f"{het}+{offset}", None, None, het, offset
    if array:
        task = j.get("array_task_id")
        if type(task) is dict:
            task = _counter(task)
        if not (type(task) is int and 0 <= task < NO_VAL):
            task = read_num(j, "array_task_id", path)
        if task is not None:
            return f"{array}_{task}", array, task, None, None
        pending = read_str(j, "array_task_string", path).split("%", 1)[0]
        if pending:  # the not-yet-split record of an array's pending tasks
            return f"{array}_[{pending}]", array, None, None, None
        return str(raw_id), array, None, None, None
    return str(raw_id), None, None, None, None


def _job_gpus(j: dict[str, object], path: str, node_count: int) -> int:
    """Allocated GPUs when Slurm says (TRES, then per-node detail), else what the job asks for."""
    get = j.get
    tres = get("tres_alloc_str")
    if type(tres) is not str:
        tres = read_str(j, "tres_alloc_str", path)
    if tres:
        try:
            n = gpus_in_tres(tres)
        except ValueError as exc:
            raise FieldError(f"{path}.tres_alloc_str", str(exc)) from None
        if n is not None:
            return n
    detail = get("gres_detail")
    if type(detail) is not list:
        detail = read_strings(j, "gres_detail", path)
    if detail:
        total, found = 0, False
        for i, d in enumerate(detail):
            if type(d) is not str:
                read_strings(j, "gres_detail", path)  # raises: not a list of strings
            try:
                c = gpus_in_gres(d) if d else None
            except ValueError as exc:
                raise FieldError(f"{path}.gres_detail[{i}]", str(exc)) from None
            if c is not None:
                total, found = total + c, True
        if found:
            return total
    n = gpu_count(gpus_in_gres, read_str(j, "tres_per_job", path), path, "tres_per_job")
    if n is not None:
        return n
    n = gpu_count(gpus_in_gres, read_str(j, "tres_per_node", path), path, "tres_per_node")
    if n is not None:
        return n * node_count
    n = gpu_count(gpus_in_gres, read_str(j, "tres_per_task", path), path, "tres_per_task")
    if n is not None:
        return n * (read_num(j, "tasks", path) or node_count)
    n = gpu_count(gpus_in_gres, read_str(j, "tres_per_socket", path), path, "tres_per_socket")
    if n is not None:
        return n * (read_num(j, "sockets_per_node", path) or 1) * node_count
    return gpu_count(gpus_in_tres, read_str(j, "tres_req_str", path), path, "tres_req_str") or 0


def _job_nodes(j: dict[str, object], expr: object, path: str) -> tuple[str, ...]:
    """The job's hosts; ``expr`` is its ``nodes`` field as read."""
    if type(expr) is not str:
        expr = read_str(j, "nodes", path)
    if expr:
        try:
            return _hosts(expr)
        except ValueError:
            return read_hosts(expr, path, "nodes")  # raises with the path
    res = j.get("job_resources")
    if type(res) is dict:
        inner = res.get("nodes")
        if type(inner) is dict:  # 24.05: {"count", "list", "allocation", ...}
            inner = inner.get("list")
        if type(inner) is str and inner:
            return read_hosts(inner, path, "job_resources.nodes")
    return ()


def job_from_json(obj: object, path: str, dates: dict[int, datetime] | None = None) -> SlurmJob:
    """One job record → ``SlurmJob``; ``FieldError`` (with the field's path) when a field has the wrong shape.

    ``dates`` maps epoch seconds to the ``datetime`` already made for them; pass one dict for a whole
    document: an array's tasks share their submit time, and jobs started in one scheduling pass share
    their start (and, with equal limits, end) times, so they share one object instead of each holding
    a copy (less to build, to keep, and for the garbage collector to visit)."""
    if type(obj) is not dict:
        raise FieldError(path, f"expected an object, got {kind(obj)}")
    j: dict[str, object] = obj
    if dates is None:
        dates = {}
    try:
        fields = _fields(j)
    except KeyError:  # Slurm prints every field, but a record without some still reads
        fields = tuple(map(j.get, _KEYS))
    (raw_id, v, het, array, name, account, partition, qos, comment, reason, user,
     expr, node_count, limit, restarts, requeue, submit, start, end) = fields
    if type(raw_id) is not int or raw_id <= 0:
        raise FieldError(f"{path}.job_id", f"expected a positive integer, got {raw_id!r}"[:200])

    flags: tuple[str, ...] = ()
    if type(v) is list and len(v) == 1:  # 23.x+: ["RUNNING"]
        v = v[0]
    state = _BASE_STATE.get(v) if type(v) is str else None
    if state is None:  # flags, unknown names, wrong shapes
        state, flags = _job_state(j.get("job_state"), path)

    if type(het) is dict:
        het = _counter(het)
    if type(array) is dict:
        array = _counter(array)
    if type(het) is int and type(array) is int and not het and not array:
        job_id, array_id, task_id, het_id, het_offset = str(raw_id), None, None, None, None
    else:
        job_id, array_id, task_id, het_id, het_offset = _job_id(j, raw_id, het, array, path)

    if not (type(name) is str and type(account) is str and type(partition) is str and type(qos) is str
            and type(comment) is str and type(reason) is str and type(user) is str):
        name, account, partition, qos, comment, reason, user = (read_str(j, k, path) for k in _STR_KEYS)

    nodes = _job_nodes(j, expr, path)
    if type(node_count) is dict:
        node_count = _counter(node_count)
    if not (type(node_count) is int and 0 <= node_count < NO_VAL):
        node_count = read_num(j, "node_count", path)
    if type(limit) is dict:
        limit = _counter(limit)
    if not (type(limit) is int and 0 <= limit < NO_VAL):
        limit = read_num(j, "time_limit", path)
    if type(restarts) is not int:
        restarts = read_num(j, "restart_cnt", path)
    hold = j.get("hold")
    if hold is not True and hold is not False:
        hold = read_bool(j, "hold", path)
    if requeue is not True and requeue is not False:
        requeue = read_bool(j, "requeue", path)
    return _new_job(
        job_id, _intern(name), _intern(user) if user else str(j.get("user_id", "")), _intern(account),
        _intern(partition), _intern(qos), _intern(comment), state, _intern(reason), nodes,
        _job_gpus(j, path, node_count or len(nodes) or 1), requeue,
        _stamp(submit, dates, j, "submit_time", path), _stamp(start, dates, j, "start_time", path),
        _stamp(end, dates, j, "end_time", path),
        None if limit is None else _LIMIT_S.get(limit) or _limit_s(limit),
        array_id, task_id, het_id, het_offset, flags,
        hold or reason in _HOLD_REASONS or (bool(flags) and not _HOLD_FLAGS.isdisjoint(flags)),
        restarts or 0,
        raw_id,
    )
