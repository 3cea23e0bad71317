"""A plain training loop that cooperates with dcflex: checkpoint when asked, resume where it stopped.

Standard library only (the "model" is a step counter), to show the shape any training script takes:

1. at start, resume from ``DCFLEX_RESUME_FROM`` if the gateway resubmitted the job after an event;
2. after each step, ``should_checkpoint()`` (a cached flag, well under a microsecond);
3. when asked: report how long the checkpoint will take, write it, acknowledge with its path, and,
   if the directive says the job will be stopped, wait briefly for the acknowledgement to be
   delivered and leave on our own (exit code 0) rather than be killed mid-write.

Run it with the variables an adapter sets on submission, e.g.::

    DCFLEX_GATEWAY_URL=http://gateway:8080 DCFLEX_JOB_ID=1234 python docs/examples/train_loop.py \\
        --steps 100000 --checkpoint-dir /shared/ckpt/1234

Under Slurm, make the training process the batch shell's (``exec python train_loop.py ...``) so the
adapter's ``scancel --batch --signal=USR1`` reaches it; the loop installs a SIGUSR1 handler.
Each line it prints is a JSON object, so a test (or a log shipper) can follow it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from gateway import jobside


def load(path: str | None) -> int:
    """The step to continue from: the checkpoint's step counter, or 0 for a fresh start."""
    if not path:
        return 0
    with open(path, encoding="utf-8") as f:
        return int(json.load(f)["step"])


def save(directory: str, step: int) -> str:
    """Write the checkpoint atomically (write, then rename), so a stop mid-write leaves the last good one."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"step-{step:08d}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"step": step, "saved_at": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="train until this step")
    parser.add_argument("--step-s", type=float, default=0.01, help="seconds one step takes")
    parser.add_argument("--checkpoint-dir", default="checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    jobside.install_signal_handler(signal.SIGUSR1)  # Slurm's way; the gateway's directives work without it
    step = load(jobside.resume_from())
    say(event="start", step=step, resumed_from=jobside.resume_from())
    while step < args.steps:
        time.sleep(args.step_s)  # the training step
        step += 1
        if step % 50 == 0:
            say(event="step", step=step)
        if jobside.should_checkpoint():
            asked = jobside.current()
            jobside.report_eta(1.0)
            path = save(args.checkpoint_dir, step)
            jobside.acknowledge(path)
            say(event="checkpoint", step=step, path=path, event_id=asked.event_id if asked else "",
                source=asked.source if asked else "")
            if asked is None or asked.stop_after:
                delivered = jobside.flush(10.0)
                say(event="stopping", step=step, acknowledged=delivered)
                return 0
    say(event="done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
