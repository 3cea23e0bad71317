"""What refusing a hostile answer costs the VEN: ``.venv/bin/python -m benchmarks.hostile_bench [--cases a,b]``.

A VTN on loopback (this process, aiohttp) serves each case of the hostile corpus (``tests/hostile_corpus.py``) and
a valid one-event distribution as the baseline. Each is received by a fresh child process that runs the VEN's own
receive path, exactly as ``_Client._perform_request`` does: the bounded POST (``post_bounded``: streamed, counted
on the wire, inflated chunk by chunk), the intake (``admit``), then openleadr's parser and ``translate_event`` for
what passes. A fresh process per case, so its peak RSS (``ru_maxrss``, a high-water mark) belongs to that case
alone (``VmHWM`` from ``/proc/self/status``: the high-water mark of this process's own memory, which, unlike
``ru_maxrss``, does not carry the parent's from before ``exec``); CPU is the child's own process time around the
receive.

Prints one JSON object: per case the refusal kind, CPU ms, the child's RSS before and its peak after, and the
growth; the worst case of each figure; the valid event's figures beside them; and whether the targets (peak
RSS ≤ 150 MB whatever the VTN sends, refusing any payload ≤ 50 ms of CPU) are met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

TARGET_RSS_MB = 150.0
TARGET_CPU_MS = 50.0
WORST = ["doctype-internal-entity", "billion-laughs", "gzip-bomb", "deflate-bomb", "stream-100MB",
         "declared-length-too-large", "5000-events", "101-events", "5000-intervals", "1MB-event-id", "deep-nesting",
         "xinclude", "schema-invalid", "corrupt-gzip", "redirect-off-origin"]


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(url: str) -> None:
    """Receive one answer from ``url`` the way the VEN does; print the figures as JSON."""
    import aiohttp

    from gateway.config.models import VenLimits
    from gateway.exceptions import HostileInput, ProtocolError
    from gateway.ven.oadr20b.intake import admit
    from gateway.ven.oadr20b.translate import translate_event
    from gateway.ven.oadr20b.transport import post_bounded, session_options

    limits = VenLimits()
    rss_before = _status_mb("VmHWM")

    async def receive() -> tuple[str, float]:
        from openleadr.messaging import parse_message

        async with aiohttp.ClientSession(**session_options()) as http:  # type: ignore[arg-type]
            started = time.process_time()
            try:
                reply = await post_bounded(http, url, "<oadrPoll/>", limits)
                admitted = admit(reply.body, limits)
                kind, payload = parse_message(admitted.body)
                for raw in payload.get("events") or []:
                    translate_event(raw, ven_key="v", received_at=datetime.now(UTC))
                outcome = f"accepted {kind}"
            except HostileInput as err:
                outcome = f"refused {err.kind}"
            except ProtocolError as err:
                outcome = f"refused event: {err}"[:80]
            return outcome, (time.process_time() - started) * 1000

    outcome, cpu_ms = asyncio.run(receive())
    peak = _status_mb("VmHWM")
    print(json.dumps({"outcome": outcome, "cpu_ms": round(cpu_ms, 2), "rss_before_mb": round(rss_before, 1),
                      "peak_rss_mb": round(peak, 1), "growth_mb": round(peak - rss_before, 1)}))


async def _serve(names: list[str]) -> dict[str, Any]:
    import gateway  # noqa: F401  # its warning filters before openleadr is imported by the corpus
    from tests.hostile_corpus import CASES
    from tests.hostile_vtn import Answer, respond, serving, valid

    cases = {c.name: c for c in CASES}
    answers: dict[str, Answer] = {"valid-event": Answer(valid("bench-ok"))}
    for name in names:
        answers[name] = cases[name].make()[0]

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await respond(request, answers[request.match_info["name"]])

    app = web.Application()
    app.router.add_post("/{name}", handle)
    results: dict[str, Any] = {}
    async with serving(app) as port:
        for name in ["valid-event", *names]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.hostile_bench", "--child", f"http://127.0.0.1:{port}/{name}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            if proc.returncode != 0:
                results[name] = {"error": err.decode(errors="replace")[-500:]}
                continue
            results[name] = json.loads(out.decode().strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(WORST), help="comma-separated case names of the corpus")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    names = [n for n in args.cases.split(",") if n]
    results = asyncio.run(_serve(names))
    hostile = {k: v for k, v in results.items() if k != "valid-event" and "error" not in v}
    worst_rss = max(hostile.items(), key=lambda kv: kv[1]["peak_rss_mb"])
    worst_cpu = max(hostile.items(), key=lambda kv: kv[1]["cpu_ms"] if kv[1]["outcome"].startswith("refused") else 0)
    print(json.dumps({
        "benchmark": "hostile_bench",
        "valid_event": results.get("valid-event"),
        "cases": results,
        "worst_peak_rss": {"case": worst_rss[0], **worst_rss[1]},
        "worst_refusal_cpu": {"case": worst_cpu[0], **worst_cpu[1]},
        "targets": {"peak_rss_mb": TARGET_RSS_MB, "refusal_cpu_ms": TARGET_CPU_MS},
        "met": {"peak_rss": worst_rss[1]["peak_rss_mb"] <= TARGET_RSS_MB,
                "refusal_cpu": worst_cpu[1]["cpu_ms"] <= TARGET_CPU_MS},
    }, indent=2))


if __name__ == "__main__":
    main()
