"""Slurm parse benchmark: ``.venv/bin/python -m benchmarks.slurm_parse_bench [--jobs 100000] [--formats 22.05,24.05]``.

Builds a ``squeue --json`` document of ``--jobs`` jobs per format by replicating the fixture's jobs
*as text* (the captured 22.05 output, and the constructed 24.05 one), so the benchmark parses exactly
Slurm's formatting and field set; each replica gets new ids (``job_id``, ``array_job_id``,
``het_job_id`` shifted together, so arrays and het jobs stay consistent). Then times, on the bytes as
``squeue`` would hand them over:

- ``json_s``: the streaming decode alone (element boundaries and ``orjson``: the floor of ``parse_s``);
- ``parse_s``: ``parse_squeue_result`` (decode + convert to ``SlurmJob``);
- ``resolve_s`` / ``to_domain_s``: ``TierResolver.resolve`` and ``to_domain`` for every job;
- ``total_s`` = parse + resolve + to_domain (median of ``--runs``);

and, in a separate run under ``tracemalloc``, the peak Python memory of the same pipeline, plus the
process RSS growth while it runs. Prints one JSON object with the targets (total ≤ 2 s, peak ≤ 300 MB)
and whether each was met. The document itself is built before measuring and not counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from adapters.slurm.jsonstream import StreamedObject
from adapters.slurm.parse import parse_squeue_result
from adapters.slurm.tiers import TierResolver, to_domain
from gateway.config.models import TierRule, TiersConfig
from gateway.domain import Tier

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "adapters" / "fixtures"
TARGETS = {"total_s": 2.0, "peak_mb": 300.0}
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
CONFIG = TiersConfig(rules=(
    TierRule(tier=Tier.PREEMPTIBLE, name_pattern="sweep*"),
    TierRule(tier=Tier.FLEX_50, partition="inference", qos="high"),
    TierRule(tier=Tier.FLEX_25, partition="batch"),
    TierRule(tier=Tier.FLEX_10, account="llm"),
))
_ID_FIELD = re.compile(r'"(job_id|array_job_id|het_job_id)": (\{\s*"set": true,\s*"infinite": false,\s*"number": )?(\d+)')


def _templates(text: str) -> tuple[str, list[list[str | int]], str, str]:
    """Split a squeue document into prefix, per-job templates (text pieces and ids), separator, suffix."""
    dec = json.JSONDecoder()
    start = text.index("[", text.index('"jobs"')) + 1
    spans = []
    pos = start
    while True:
        pos = re.compile(r"[\s,]*").match(text, pos).end()  # type: ignore[union-attr]
        if text[pos] == "]":
            break
        _, end = dec.raw_decode(text, pos)
        spans.append((pos, end))
        pos = end
    templates: list[list[str | int]] = []
    for a, b in spans:
        job, last = text[a:b], 0
        pieces: list[str | int] = []
        for m in _ID_FIELD.finditer(job):
            pieces.append(job[last:m.start(3)])
            pieces.append(int(m.group(3)))
            last = m.end(3)
        pieces.append(job[last:])
        templates.append(pieces)
    sep = text[spans[0][1]:spans[1][0]] if len(spans) > 1 else ",\n"
    return text[:spans[0][0]], templates, sep, text[spans[-1][1]:]


def build_document(fixture: Path, n_jobs: int) -> bytes:
    """``n_jobs`` jobs in the fixture's exact format, ids shifted per replica of the fixture's job set."""
    prefix, templates, sep, suffix = _templates(fixture.read_text())
    max_id = max(p for t in templates for p in t if isinstance(p, int))
    step = 10 ** len(str(max_id))
    parts = []
    for i in range(n_jobs):
        offset = (i // len(templates) + 1) * step
        t = templates[i % len(templates)]
        parts.append("".join(p if isinstance(p, str) else str(p + offset if p else 0) for p in t).encode())
    return prefix.encode() + sep.encode().join(parts) + suffix.encode()


def _pipeline(doc: bytes) -> tuple[float, float, float, int]:
    resolver = TierResolver(CONFIG)
    t0 = time.perf_counter()
    result = parse_squeue_result(doc)
    t1 = time.perf_counter()
    policies = [resolver.resolve(j) for j in result.items]
    t2 = time.perf_counter()
    domain = [to_domain(j, p, NOW) for j, p in zip(result.items, policies, strict=True)]
    t3 = time.perf_counter()
    assert len(domain) == len(result.items)
    return t1 - t0, t2 - t1, t3 - t2, len(domain)


def _json_only(doc: bytes) -> float:
    t0 = time.perf_counter()
    for _ in StreamedObject(doc, ("jobs",)).items():
        pass
    return time.perf_counter() - t0


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench(fmt: str, n_jobs: int, runs: int) -> dict[str, object]:
    doc = build_document(FIXTURES / f"slurm-{fmt}" / "squeue.json", n_jobs)
    json_s = min(_json_only(doc) for _ in range(max(1, runs // 2)))
    timings = []
    rss_before = _rss_mb()
    for _ in range(runs):
        timings.append(_pipeline(doc))
    rss_delta = _rss_mb() - rss_before
    tracemalloc.start()
    _pipeline(doc)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    parse_s, resolve_s, domain_s = (statistics.median(t[k] for t in timings) for k in range(3))
    total = statistics.median(t[0] + t[1] + t[2] for t in timings)
    return {
        "jobs": timings[0][3],
        "document_mb": round(len(doc) / 2**20, 1),
        "json_s": round(json_s, 3),
        "parse_s": round(parse_s, 3),
        "resolve_s": round(resolve_s, 3),
        "to_domain_s": round(domain_s, 3),
        "total_s": round(total, 3),
        "peak_mb": round(peak, 1),
        "rss_delta_mb": round(rss_delta, 1),
        "met": {"total_s": total <= TARGETS["total_s"], "peak_mb": peak <= TARGETS["peak_mb"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--formats", default="22.05,24.05")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    logging.getLogger("dcflex.adapters.slurm").setLevel(logging.ERROR)  # the fixtures' bad tags, once per run
    out = {"targets": TARGETS, "results": {f: bench(f, args.jobs, args.runs) for f in args.formats.split(",")}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
