"""The ``dcflex`` command: ``demo``, ``run``, ``check-config``, ``report``, ``replay``, ``ack``.

Exit codes: 0 success, 2 invalid input (configuration, arguments), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from gateway.config import load_config
from gateway.exceptions import ConfigError, DcflexError


def _problems(exc: ConfigError) -> None:
    """Every problem of a configuration or scenario, one a line, with its key path."""
    print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
    for path, msg in exc.problems:
        print(f"  {path}: {msg}", file=sys.stderr)


def _check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        _problems(exc)
        return 2
    print(f"{args.file}: OK (scheduler {cfg.scheduler.kind}, site {cfg.site.site_id}, "
          f"{cfg.site.nodes} nodes x {cfg.site.gpus_per_node} GPUs, journal {cfg.journal.path})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from gateway.app import run_gateway

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        asyncio.run(run_gateway(cfg, dry_run=args.dry_run))
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except DcflexError as exc:
        print(f"dcflex: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from simulators.demo import DemoOptions, run_demo

    opts = DemoOptions(out_dir=Path(args.out_dir), speed=args.speed, quiet=args.quiet)
    report = asyncio.run(run_demo(opts))
    return 0 if report.get("critical_jobs_touched", 1) == 0 else 1


def _replay(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gateway.exceptions import ScenarioError
    from simulators.replay.compare import ReplayOptions, limited, replay
    from simulators.replay.scenario import load_scenario, shipped

    if args.list or not args.scenario:
        for name, path in sorted(shipped().items()):
            try:
                desc = load_scenario(path).spec.scenario.description
            except ScenarioError as exc:
                desc = f"(invalid: {exc.problems[0][1]})"
            print(f"{name:<18} {desc}")
        return 0 if args.list else 2
    try:
        scn = load_scenario(args.scenario)
    except ScenarioError as exc:
        _problems(exc)
        return 2
    if args.hours is not None or args.events is not None:
        scn = limited(scn, hours=args.hours, events=args.events)
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip()) if args.strategies else ()
    unknown = [s for s in strategies if s not in scn.spec.scenario.strategies and s not in _STRATEGIES]
    if unknown:
        print(f"dcflex replay: unknown strategy {unknown[0]!r} (known: {', '.join(_STRATEGIES)})", file=sys.stderr)
        return 2
    opts = ReplayOptions(mode=args.mode, strategies=strategies, out=Path(args.out) if args.out else None,
                         plots_dir=Path(args.plots) if args.plots else None, quiet=args.quiet, speed=args.speed,
                         workers=args.workers)
    report = asyncio.run(replay(scn, opts, Console(quiet=args.quiet and not args.table, highlight=False)))
    return 0 if all(report["checks"].values()) else 1


_STRATEGIES = ("dcflex", "priority", "uniform-cap", "pause-all")


def _report(args: argparse.Namespace) -> int:
    from gateway.journal import Journal
    from gateway.report import build_report, render

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not Path(cfg.journal.path).exists():
        print(f"dcflex: no journal at {cfg.journal.path} (journal.path in {args.config})", file=sys.stderr)
        return 2
    with Journal(cfg.journal.path) as journal:
        try:
            report = build_report(journal, args.event_id, cfg.site, cfg.policy.tolerance_kw)
        except DcflexError as exc:
            print(f"dcflex: {exc}", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else Path(f"report-{re.sub(r'[^A-Za-z0-9_.-]', '_', args.event_id)}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"written: {out}")
    return 0


def _slurm_job_id(env: Mapping[str, str]) -> str:
    """The job as the Slurm adapter names it: ``123_4`` for an array task (``SLURM_JOB_ID`` is then the
    task's own numeric id, which the adapter does not wait on), else ``SLURM_JOB_ID``."""
    array, task = env.get("SLURM_ARRAY_JOB_ID", ""), env.get("SLURM_ARRAY_TASK_ID", "")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID", "")


_ACK_JOB_ID = re.compile(r"^[A-Za-z0-9_.+:-]{1,128}$")
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8765"


def _ack(args: argparse.Namespace) -> int:
    """POST a checkpoint acknowledgement; run from a job script, so it fails fast and says why."""
    job_id = args.job_id or _slurm_job_id(os.environ)
    if not job_id or not _ACK_JOB_ID.match(job_id):
        print(f"dcflex ack: {job_id!r} is not a job id (give JOB_ID, or run inside a Slurm job)", file=sys.stderr)
        return 2
    base = (args.gateway or os.environ.get("DCFLEX_GATEWAY_URL") or DEFAULT_GATEWAY_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        print(f"dcflex ack: gateway URL {base!r} must start with http:// or https://", file=sys.stderr)
        return 2
    url = f"{base}/v1/jobs/{urllib.parse.quote(job_id, safe='')}/checkpoint-ack"
    body = json.dumps({"checkpoint_path": args.path, "event_id": args.event}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        print(f"dcflex ack: the gateway at {base} refused the acknowledgement of job {job_id} "
              f"(HTTP {exc.code}): {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"dcflex ack: cannot reach the gateway at {base} ({reason}); job {job_id}'s checkpoint was not "
              "acknowledged (set DCFLEX_GATEWAY_URL or --gateway)", file=sys.stderr)
        return 1
    print(f"dcflex ack: job {job_id} checkpoint acknowledged at {answer.get('at', '?')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcflex", description="Demand-response gateway for AI datacenters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the whole loop on embedded defaults: VTN → gateway → simulated cluster")
    p.add_argument("--out-dir", default=".", help="where demo-report.json and demo-report.png go")
    p.add_argument("--speed", type=float, default=300.0, help="virtual seconds per wall second")
    p.add_argument("--quiet", action="store_true", help="no timeline or progress, just the summary")
    p.set_defaults(func=_demo)

    p = sub.add_parser("run", help="the long-running gateway: VEN + engine + configured scheduler")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--dry-run", action="store_true", help="show the commands instead of running them")
    p.set_defaults(func=_run)

    p = sub.add_parser("check-config", help="validate a configuration file and list every problem")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_check_config)

    p = sub.add_parser("report", help="what an event asked, what was delivered minute by minute, and its cost to jobs")
    p.add_argument("event_id", metavar="EVENT_ID")
    p.add_argument("--config", required=True, type=Path, help="the gateway's configuration (for its journal)")
    p.add_argument("--out", default=None, metavar="FILE", help="JSON file to write (default: report-EVENT_ID.json)")
    p.set_defaults(func=_report)

    p = sub.add_parser("replay", help="replay a scenario's events against its job mix, per strategy, and compare")
    p.add_argument("scenario", nargs="?", metavar="SCENARIO", help="a shipped scenario's name or a scenario file")
    p.add_argument("--list", action="store_true", help="list the shipped scenarios")
    p.add_argument("--mode", choices=("fast", "protocol"), default=None, help="default: the scenario's")
    p.add_argument("--strategies", default=None, metavar="A,B", help=f"default: the scenario's ({', '.join(_STRATEGIES)})")
    p.add_argument("--out", default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument("--plots", default=None, metavar="DIR", help="write <scenario>-power.png and <scenario>-tiers.png")
    p.add_argument("--hours", type=float, default=None, help="cut the horizon short (events that do not fit are left out)")
    p.add_argument("--events", type=int, default=None, help="only the first N events")
    p.add_argument("--speed", type=float, default=None, help="protocol mode: virtual seconds per wall second")
    p.add_argument("--workers", type=int, default=None,
                   help="fast mode: run the strategies in this many processes (default: one per CPU; 1: in this one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    p.add_argument("--table", action="store_true", help="with --quiet: still print the table")
    p.set_defaults(func=_replay)

    p = sub.add_parser("ack", help="tell the gateway a job's checkpoint is written (run it from the job script)")
    p.add_argument("job_id", nargs="?", metavar="JOB_ID",
                   help="Slurm job id (default: $SLURM_ARRAY_JOB_ID_$SLURM_ARRAY_TASK_ID, else $SLURM_JOB_ID)")
    p.add_argument("--path", default="", metavar="CHECKPOINT_PATH", help="where the checkpoint was written")
    p.add_argument("--event", default="", metavar="EVENT_ID", help="the event the checkpoint was asked for, if known")
    p.add_argument("--gateway", default=None, metavar="URL",
                   help=f"the gateway's API (default: $DCFLEX_GATEWAY_URL or {DEFAULT_GATEWAY_URL})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway (default 10)")
    p.set_defaults(func=_ack)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose and args.command in ("run", "demo", "replay"):
        import openleadr  # noqa: F401  (it sets its own logger to INFO on import; quiet it after)

        for noisy in ("openleadr", "apscheduler", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if args.command == "replay":  # every strategy's run would log each event's life: the report counts it
            logging.getLogger("dcflex").setLevel(logging.CRITICAL)
            logging.getLogger("openleadr").setLevel(logging.ERROR)  # its VTN's advice on VEN lookups, per run
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
