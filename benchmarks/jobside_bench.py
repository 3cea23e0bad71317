"""Job-side helper overhead: ``.venv/bin/python -m benchmarks.jobside_bench [--n 10000] [--repeats 201]``.

What a training step pays for asking ``should_checkpoint()`` when nothing is pending. The helper is
configured as in a real job: it polls a real gateway API (aiohttp on loopback, in a thread of this
process, so the poller's requests compete for the GIL as they would) at the default 5 s interval.

Each repeat times ``n`` iterations of an empty loop and ``n`` iterations of the same loop calling the
helper (the bound method, and the module-level function a script usually calls), interleaved so
drift in CPU frequency or load hits all alike; the overhead of one step is the difference divided by
``n``. Prints one JSON object with the medians (and 95th percentiles) in ns and whether the target
(median overhead ≤ 5 µs) is met.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from gateway import jobside
from gateway.api import ApiServer, build_app
from gateway.clock import SystemClock
from gateway.jobchannel import CheckpointAcks, JobDirectives

TARGET_NS = 5_000.0


class _Gateway:
    """The real API in a background event loop, for the helper to poll."""

    def __init__(self) -> None:
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        clock = SystemClock()
        app = build_app(status=dict, healthy=lambda: True, acks=CheckpointAcks(), clock=clock,
                        directives=JobDirectives(clock))
        self._stop = asyncio.Event()
        async with ApiServer(app, "127.0.0.1", 0) as server:
            self.url = server.url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> _Gateway:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


def _time_loop(body: Callable[[], object] | None, n: int) -> int:
    rng = range(n)
    if body is None:
        t0 = time.perf_counter_ns()
        for _ in rng:
            pass
        return time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    for _ in rng:
        if body():
            break
    return time.perf_counter_ns() - t0


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def run(n: int, repeats: int) -> dict[str, object]:
    with _Gateway() as gateway:
        helper = jobside.JobHelper(gateway.url, "bench-1")  # default 5 s poll, as in a job
        jobside._default = helper  # the module-level function uses this instance
        helper.should_checkpoint()  # starts the poller
        time.sleep(0.2)  # its first poll has been answered (204)
        empty: list[float] = []
        method: list[float] = []
        module: list[float] = []
        gc.disable()
        try:
            for _ in range(repeats):
                e = _time_loop(None, n)
                m = _time_loop(helper.should_checkpoint, n)
                f = _time_loop(jobside.should_checkpoint, n)
                empty.append(e / n)
                method.append((m - e) / n)
                module.append((f - e) / n)
        finally:
            gc.enable()
        pending = helper.should_checkpoint()
        reachable = helper._link.reachable
        helper.close()
    median_method = statistics.median(method)
    median_module = statistics.median(module)
    return {
        "benchmark": "jobside_should_checkpoint",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "iterations_per_repeat": n,
        "repeats": repeats,
        "empty_loop_ns_per_step": round(statistics.median(empty), 1),
        "overhead_ns_per_step": {
            "helper_method_median": round(median_method, 1),
            "helper_method_p95": round(_p95(method), 1),
            "module_function_median": round(median_module, 1),
            "module_function_p95": round(_p95(module), 1),
        },
        "gateway_polled_during_run": reachable is True,
        "directive_pending": pending,
        "target_ns": TARGET_NS,
        "met": max(median_method, median_module) <= TARGET_NS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=10_000, help="loop iterations per timed repeat")
    parser.add_argument("--repeats", type=int, default=201)
    args = parser.parse_args()
    print(json.dumps(run(args.n, args.repeats), indent=2))


if __name__ == "__main__":
    main()
