"""The ``dcflex`` command: ``demo``, ``run``, ``check-config``.

Exit codes: 0 success, 2 invalid input (configuration, arguments), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.exceptions import ConfigError, DcflexError


def _check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for path, msg in exc.problems:
            print(f"  {path}: {msg}", file=sys.stderr)
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

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        import openleadr  # noqa: F401  (it sets its own logger to INFO on import; quiet it after)

        for noisy in ("openleadr", "apscheduler", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
