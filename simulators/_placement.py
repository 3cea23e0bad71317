"""Where the simulated cluster's jobs go: the nodes' free GPUs, the scheduler's queue, and placement.

Kept apart from the time-stepping in ``_simcore.py``. Both classes keep indexes so a scheduler pass on a
10,000-GPU site costs what it places, not the size of the site times the length of the queue: the nodes
are bucketed by free GPUs (a job that cannot fit is told so in a few set lookups), and the queue is
indexed by job size (a pass skips every size that the free capacity cannot hold). Placement itself is
``place()``'s rule exactly, so the indexes change the speed, never the outcome.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import count
from typing import Generic, Protocol, TypeVar

from gateway.domain import Node


def place(free: dict[str, int], gpn: int, gpus: int, allowed: set[str], prefer: list[str]) -> list[tuple[str, int]] | None:
    """Pick nodes for a job, or None when it does not fit now (``free`` changes only on success).

    A job of a node or more takes whole, entirely free nodes (``prefer`` first, then by name);
    a smaller job shares: it goes on the allowed node with the fewest free GPUs that still fit.
    (The reference rule; ``NodePool.place`` gives the same answer from its indexes.)
    """
    if gpus >= gpn:
        whole = sorted((n for n in free if n in allowed and free[n] == gpn), key=lambda n: (n not in prefer, n))
        need = math.ceil(gpus / gpn)
        if len(whole) < need:
            return None
        for n in whole[:need]:
            free[n] = 0
        return [(n, gpn) for n in whole[:need]]
    fits = [n for n in free if n in allowed and free[n] >= gpus]
    if not fits:
        return None
    best = min(fits, key=lambda n: (n not in prefer, free[n], n))
    free[best] -= gpus
    return [(best, gpus)]


class NodePool:
    """The nodes: free GPUs per node, the gateway's holds (``held``) and other people's drains (``other``).

    ``free``, ``held`` and ``other`` are plain containers others may read, and ``held`` may be changed
    in place (the cluster's hold command does): it is read afresh whenever it matters. ``free`` must
    change only through ``set_free`` so the buckets stay right.
    """

    def __init__(self, names: Sequence[str], gpus_per_node: int, other: Iterable[str]) -> None:
        self.names = list(names)
        self.gpn = gpus_per_node
        self.free = {n: gpus_per_node for n in self.names}
        self.held: set[str] = set()
        self.other = set(other)
        # Nodes nobody else drained, by free GPUs: a fit check looks at gpn+1 sets, not at every node, and
        # a placement takes the first names of a sorted list (which sets do not keep) instead of sorting.
        self._by_free: list[set[str]] = [set() for _ in range(gpus_per_node + 1)]
        self._by_free[gpus_per_node].update(n for n in self.names if n not in self.other)
        self._sorted: list[list[str]] = [sorted(b) for b in self._by_free]
        self._index = {n: i for i, n in enumerate(self.names)}
        self._values = [self._value(n) for n in self.names]
        self._values_tuple = tuple(self._values)
        self._changed: set[str] = set()
        self._held_seen: frozenset[str] = frozenset()

    def set_free(self, node: str, gpus: int) -> None:
        old = self.free[node]
        if node not in self.other and gpus != old:
            self._by_free[old].discard(node)
            self._by_free[gpus].add(node)
            was = self._sorted[old]
            del was[bisect_left(was, node)]
            insort(self._sorted[gpus], node)
        self.free[node] = gpus
        self._changed.add(node)

    def fits_now(self) -> Callable[[int], bool]:
        """Whether a job of so many GPUs, with no held nodes of its own, would fit now (until ``free`` changes)."""
        held, gpn = self.held, self.gpn
        whole = self._by_free[gpn]
        n_whole = len(whole) - (len(held & whole) if held else 0)
        most = next((k for k in range(gpn, 0, -1) if self._by_free[k] and not self._by_free[k] <= held), 0)
        return lambda gpus: -(-gpus // gpn) <= n_whole if gpus >= gpn else gpus <= most

    def place(self, gpus: int, prefer: Sequence[str]) -> list[tuple[str, int]] | None:
        """``place(free, gpn, gpus, allowed, prefer)`` with ``allowed`` = nodes nobody drained, plus the
        ``prefer`` nodes the gateway holds (a hold kept for a restarting job): same nodes, same order."""
        gpn, held, other, free = self.gpn, self.held, self.other, self.free
        mine = set(prefer)
        if gpus >= gpn:
            need = math.ceil(gpus / gpn)
            own = sorted(n for n in mine if free[n] == gpn and (n in held or n not in other))
            chosen = own[:need]
            if len(chosen) < need:
                whole = self._by_free[gpn]
                rest = len(whole) - (len(held & whole) if held else 0) - sum(1 for n in mine if n in whole and n not in held)
                if rest < need - len(chosen):
                    return None
                for n in self._sorted[gpn]:
                    if n not in held and n not in mine:
                        chosen.append(n)
                        if len(chosen) == need:
                            break
            for n in chosen:
                self.set_free(n, 0)
            return [(n, gpn) for n in chosen]
        own = [n for n in mine if free[n] >= gpus and (n in held or n not in other)]
        if own:
            best = min(own, key=lambda n: (free[n], n))
        else:
            for k in range(gpus, gpn + 1):
                b = self._by_free[k]
                if b and not b <= held:
                    best = next(n for n in self._sorted[k] if n not in held)
                    break
            else:
                return None
        self.set_free(best, free[best] - gpus)
        return [(best, gpus)]

    def values(self) -> tuple[Node, ...]:
        """Every node as the scheduler reports it; rebuilt only for nodes whose GPUs or hold changed."""
        if self.held != self._held_seen:
            self._changed.update(self.held ^ self._held_seen)
            self._held_seen = frozenset(self.held)
        if self._changed:
            for n in self._changed:
                self._values[self._index[n]] = self._value(n)
            self._changed.clear()
            self._values_tuple = tuple(self._values)
        return self._values_tuple

    def _value(self, n: str) -> Node:
        free = self.free[n]
        busy = "idle" if free == self.gpn else "allocated" if free == 0 else "mixed"
        drained = n in self.held or n in self.other
        state = busy if not drained else "drained" if busy == "idle" else "draining"
        return Node(n, self.gpn, state, drained_by_gateway=n in self.held, drained_by_other=n in self.other)


class Ticketed(Protocol):
    """A job as the queue sees it: a slot for its place in the queue (-1: not queued)."""

    qseq: int


_J = TypeVar("_J", bound=Ticketed)
OWN_NODES = -1  # the size key of a job that had nodes before: its fit depends on them, so it is always tried


class JobQueue(Generic[_J]):
    """The scheduler's queue in submission order, list-like (``append``, ``remove``, iteration, ``len``).

    Each job is filed under a size key (its GPUs, or ``OWN_NODES``) so that a pass can go straight to
    the next job, in queue order, of a size the free capacity can hold (``next_after``).
    """

    def __init__(self) -> None:
        self._tickets = count()
        self._jobs: dict[int, tuple[_J, int]] = {}  # ticket → (job, size key), in queue order
        self._by_key: dict[int, list[int]] = {}  # size key → its tickets, ascending

    def append(self, job: _J, key: int) -> None:
        seq = job.qseq = next(self._tickets)
        self._jobs[seq] = (job, key)
        self._by_key.setdefault(key, []).append(seq)  # tickets only grow: the list stays sorted

    def remove(self, job: _J) -> None:
        entry = self._jobs.get(job.qseq)
        if entry is None or entry[0] is not job:
            raise ValueError("JobQueue.remove(job): job not in queue")
        tickets = self._by_key[entry[1]]
        del tickets[bisect_left(tickets, job.qseq)]
        del self._jobs[job.qseq]
        job.qseq = -1

    def __contains__(self, job: object) -> bool:
        seq = getattr(job, "qseq", -1)
        return seq in self._jobs and self._jobs[seq][0] is job

    def __iter__(self) -> Iterator[_J]:
        return iter([j for j, _ in self._jobs.values()])

    def __len__(self) -> int:
        return len(self._jobs)

    def next_after(self, ticket: int, fits: Callable[[int], bool]) -> _J | None:
        """The first job queued after ``ticket`` whose size key ``fits`` (``OWN_NODES`` always does)."""
        best = -1
        for key, tickets in self._by_key.items():
            if not tickets or (key != OWN_NODES and not fits(key)):
                continue
            i = bisect_right(tickets, ticket)
            if i < len(tickets) and (best < 0 or tickets[i] < best):
                best = tickets[i]
        return self._jobs[best][0] if best >= 0 else None
