"""``JobHelper``: one job's state, its background thread, and its signal handler.

The public face is ``gateway.jobside`` (module-level functions over a default instance, and the
usage notes); this module holds the machinery behind it. Standard library only.

Threading model, and why: the training loop reads ``_flag`` without a lock (a plain attribute read,
atomic under the GIL) so a step never waits. Everything else that changes state takes ``_lock``.
A signal handler takes no lock (the code it interrupted may hold it) and does not log: it sets two
attributes and writes a byte to a socket pair; the background thread (which ``select``s on that
socket between polls) turns the signal into a directive and wakes waiters. One daemon thread does
all network I/O: polls on ``poll_s``, delivers the acknowledgement and the latest ETA with
exponential backoff (reset, and retried at once, as soon as a poll gets through again).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import select
import signal
import socket
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Mapping
from types import FrameType
from typing import Any

from gateway.jobside.link import (
    DEFAULT_EXIT_FLUSH_S,
    DEFAULT_POLL_S,
    MAX_TIMEOUT_S,
    Directive,
    GatewayLink,
    config_problem,
    parse_directive,
    settings_from_env,
)

__all__ = ["MAX_ETA_S", "JobHelper"]

log = logging.getLogger("dcflex.jobside")

MAX_ETA_S = 1e9


class JobHelper:
    """One job's link to the gateway. Most scripts use the module-level functions (a default
    instance built from the environment); tests and multi-job processes build their own."""

    def __init__(self, gateway_url: str | None = None, job_id: str | None = None, *, resume_from: str | None = None,
                 poll_s: float = DEFAULT_POLL_S, timeout_s: float = MAX_TIMEOUT_S, retry_max_s: float = 30.0,
                 exit_flush_s: float = DEFAULT_EXIT_FLUSH_S) -> None:
        self.gateway_url = (gateway_url or "").rstrip("/") or None
        self.job_id = job_id or None
        self._resume = resume_from or None
        self.poll_s = max(0.01, poll_s) if math.isfinite(poll_s) else DEFAULT_POLL_S
        self.retry_max_s = max(self.poll_s, retry_max_s)
        self.exit_flush_s = exit_flush_s
        self._problem = config_problem(self.gateway_url, self.job_id)
        self._link = GatewayLink(self.gateway_url or "", self.job_id or "", timeout_s)
        # Read by the training loop without a lock: plain attribute reads and writes are atomic.
        self._flag = False
        self._pending: Directive | None = None
        self._signal_hit = False
        self._signal_name = ""
        self._thread: threading.Thread | None = None
        self._closing = False
        self._ack_out: tuple[str, str] | None = None
        self._eta_out: float | None = None
        self._acked_seq = 0
        self._seen_seq = 0
        self._signal_count = 0
        self._said: set[str] = set()
        self._init_sync()
        _HELPERS.add(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobHelper:
        """Configured as the adapter set it up (see the module docstring for the variables)."""
        cfg = settings_from_env(os.environ if environ is None else environ)
        return cls(cfg.gateway_url, cfg.job_id, resume_from=cfg.resume_from, poll_s=cfg.poll_s,
                   exit_flush_s=cfg.exit_flush_s)

    def _init_sync(self) -> None:
        """Locks, the wake-up socket pair and the queues; again in a forked child, which has no thread."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._start_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._async_waiters: list[tuple[Any, Any]] = []
        self._thread = None

    # -- what the training loop calls -------------------------------------------------------------

    def should_checkpoint(self) -> bool:
        """True while a checkpoint is asked for and not yet acknowledged. Reads a cached flag."""
        if self._thread is None:
            self._start()
        return self._flag

    def current(self) -> Directive | None:
        """The directive behind the flag (its event id, deadline, ``stop_after``), or None."""
        self._start()
        with self._lock:
            self._absorb_signal()
            return self._pending

    def wait_directive(self, timeout: float | None = None) -> Directive | None:
        """For a thread: the pending directive, waiting up to ``timeout`` s for one; None if none came."""
        self._start()
        with self._cond:
            self._cond.wait_for(lambda: self._absorb_signal() or self._pending is not None or self._closing, timeout)
            return self._pending

    async def directives(self) -> AsyncGenerator[Directive, None]:
        """For an asyncio loop: yields each new directive once (a pending one first), forever."""
        import asyncio

        self._start()
        last: tuple[str, int] | None = None
        while not self._closing:
            with self._lock:
                self._absorb_signal()
                seen = self._pending
            if seen is not None and (seen.source, seen.seq) != last:
                last = (seen.source, seen.seq)
                yield seen
                continue
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            with self._lock:
                self._async_waiters.append((loop, fut))
                changed = self._pending is not seen or self._signal_hit
            try:
                if not changed:
                    await fut
            finally:
                with self._lock:
                    if (loop, fut) in self._async_waiters:
                        self._async_waiters.remove((loop, fut))

    def acknowledge(self, checkpoint_path: str = "", event_id: str = "") -> None:
        """The checkpoint is written: clear the flag now and tell the gateway in the background."""
        self._start()
        with self._cond:
            self._absorb_signal()
            pending = self._pending
            if pending is not None:
                event_id = event_id or pending.event_id
            self._acked_seq = max(self._acked_seq, self._seen_seq)
            self._pending = None
            self._flag = False
            if self._problem is None:
                self._ack_out = (str(checkpoint_path), str(event_id))
            self._cond.notify_all()
        if self._problem is not None:
            self._say_once("ack", "dcflex: checkpoint acknowledged locally but not sent: %s", self._problem)
        self._wake()

    def report_eta(self, seconds_left: float) -> None:
        """The job's estimate, sent in the background: while a checkpoint is asked of it, of the seconds the
        checkpoint still needs; otherwise, of the seconds until the job ends (the gateway announces large
        drops of the site's load ahead, and a job's end is one)."""
        try:
            value = float(seconds_left)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            log.warning("dcflex: report_eta(%r) ignored: seconds_left must be a finite number >= 0", seconds_left)
            return
        self._start()
        if self._problem is not None:
            self._say_once("eta", "dcflex: ETA not sent: %s", self._problem)
            return
        with self._lock:
            self._eta_out = min(value, MAX_ETA_S)
        self._wake()

    def resume_from(self) -> str | None:
        """The checkpoint this run should resume from (``DCFLEX_RESUME_FROM``), or None for a fresh start."""
        return self._resume

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait up to ``timeout`` s for queued acknowledgements and ETAs to be delivered; True if they were.
        Call it before exiting on your own after an acknowledgement."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ack_out is None and self._eta_out is None, timeout)

    def install_signal_handler(self, signum: int | None = None) -> bool:
        """Make ``signum`` (default SIGUSR1) raise the checkpoint flag. Only the main thread may install a
        signal handler (Ray Train runs the training function in another thread: use directives there);
        returns False, with a warning, when it cannot be installed. A Python handler already installed
        for that signal is still called."""
        sig = signum if signum is not None else getattr(signal, "SIGUSR1", None)
        if sig is None:
            log.warning("dcflex: this platform has no SIGUSR1; no signal handler installed")
            return False
        if threading.current_thread() is not threading.main_thread():
            log.warning("dcflex: signal handlers can only be installed from the main thread; %s not handled", sig)
            return False
        previous = signal.getsignal(sig)
        me = weakref.ref(self)

        def handler(num: int, frame: FrameType | None) -> None:
            helper = me()
            if helper is not None:
                helper._on_signal(num)
            if callable(previous):
                previous(num, frame)

        signal.signal(sig, handler)
        self._start()
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Stop the background thread (tests; a training script never needs to)."""
        self._closing = True
        with self._cond:
            self._cond.notify_all()
            for loop, fut in self._async_waiters:
                _wake_async(loop, fut)
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            self._wake_r.close()
            self._wake_w.close()

    # -- signal and wake-up ---------------------------------------------------------------------------

    def _on_signal(self, num: int) -> None:
        """Runs in the signal handler: attribute writes and a non-blocking send only, never a lock
        (the interrupted code may hold it) and never logging."""
        self._signal_name = _signal_name(num)
        self._signal_hit = True
        self._flag = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full (already awake) or closed
            pass

    def _absorb_signal(self) -> bool:
        """With the lock held: turn a signal into a pending directive (unless one is pending)."""
        if not self._signal_hit:
            return False
        self._signal_hit = False
        if self._pending is None:
            self._signal_count += 1
            self._pending = Directive(self.job_id or "", self._signal_count, "checkpoint", "", None, True, "signal")
        self._flag = True
        self._notify()
        log.info("dcflex: checkpoint requested by %s", self._signal_name or "a signal")
        return True

    def _notify(self) -> None:
        """With the lock held: wake threads in wait_directive/flush and async iterators."""
        self._cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, fut in waiters:
            _wake_async(loop, fut)

    # -- the background thread ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is not None or self._closing:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="dcflex-jobside", daemon=True)
                thread.start()
                self._thread = thread
                if self._problem is not None:
                    self._say_once("config", "dcflex: not polling the gateway: %s (signals still work)", self._problem)

    def _run(self) -> None:
        next_poll = time.monotonic()
        next_send = 0.0
        backoff = min(0.5, self.poll_s)
        while not self._closing:
            try:
                with self._lock:
                    self._absorb_signal()
                now = time.monotonic()
                if self._problem is None and now >= next_poll:
                    if self._poll() and next_send > now:
                        next_send, backoff = 0.0, min(0.5, self.poll_s)  # gateway is back: send now
                    next_poll = time.monotonic() + self.poll_s
                if self._has_outbound() and time.monotonic() >= next_send:
                    if self._send():
                        next_send, backoff = 0.0, min(0.5, self.poll_s)
                    else:
                        next_send = time.monotonic() + backoff
                        backoff = min(backoff * 2, self.retry_max_s)
                due = next_poll if self._problem is None else math.inf
                if self._has_outbound():
                    due = min(due, next_send)
                self._sleep_until(due)
            except Exception:  # the thread must survive anything; the training loop never sees it
                self._say_once("crash", "dcflex: job-side helper error (it keeps running)", exc_info=True)
                self._sleep_until(time.monotonic() + self.poll_s)

    def _sleep_until(self, due: float) -> None:
        timeout = None if math.isinf(due) else max(0.0, due - time.monotonic())
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
            if ready:
                while self._wake_r.recv(4096):
                    pass
        except (BlockingIOError, InterruptedError):
            pass

    def _has_outbound(self) -> bool:
        return self._ack_out is not None or self._eta_out is not None

    def _poll(self) -> bool:
        """One directive poll; True when the gateway answered."""
        answer = self._link.request("GET", "directive")
        if answer is None:
            return False
        status, body = answer
        directive: Directive | None = None
        if status == 200:
            try:
                directive = parse_directive(body, self.job_id or "")
            except ValueError as exc:
                self._say_once("parse", "dcflex: cannot read the gateway's directive: %s", exc)
                return True
        elif status == 404:
            self._say_once("404", "dcflex: the gateway at %s serves no directives (HTTP 404); signals still work",
                           self.gateway_url)
        elif status != 204:
            self._say_once(f"poll{status}", "dcflex: directive poll answered HTTP %s: %s", status, body[:200])
            return True
        with self._lock:
            self._absorb_signal()
            if directive is not None:
                self._seen_seq = max(self._seen_seq, directive.seq)
                current = self._pending
                if directive.seq > self._acked_seq and (current is None or current != directive):
                    self._pending = directive
                    self._flag = True
                    self._notify()
                    log.info("dcflex: the gateway asks for a %s (event %s, seq %d, deadline %s)", directive.kind,
                             directive.event_id or "-", directive.seq, directive.deadline)
            elif self._pending is not None and self._pending.source == "gateway":
                log.info("dcflex: the gateway withdrew its %s request (seq %d)", self._pending.kind, self._pending.seq)
                self._pending = None
                self._flag = False
                self._notify()
        return True

    def _send(self) -> bool:
        """Deliver the queued acknowledgement, then the latest ETA; True when nothing is left to retry."""
        with self._lock:
            ack, eta = self._ack_out, self._eta_out
        if ack is not None:
            sent = self._link.post("checkpoint-ack", {"checkpoint_path": ack[0], "event_id": ack[1]}, "acknowledgement")
            if not sent:
                return False
            with self._cond:
                if self._ack_out is ack:
                    self._ack_out = None
                self._cond.notify_all()
            log.info("dcflex: checkpoint acknowledged to the gateway (%s)", ack[0] or "no path")
        if eta is not None:
            if not self._link.post("eta", {"seconds_left": eta}, "ETA", refusal_once=True):
                return False
            with self._cond:
                if self._eta_out == eta:
                    self._eta_out = None
                self._cond.notify_all()
        return True

    def _say_once(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(msg, *args, exc_info=exc_info)

    def _after_fork(self) -> None:
        """In a forked child (a data-loader worker): fresh locks and socket pair, no thread until used,
        and nothing of the parent's queue (the parent delivers its own acknowledgement)."""
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        self._init_sync()
        self._ack_out = None
        self._eta_out = None


def _wake_async(loop: Any, fut: Any) -> None:
    def done() -> None:
        if not fut.done():
            fut.set_result(None)

    try:
        loop.call_soon_threadsafe(done)
    except RuntimeError:  # that loop is closed; nobody is waiting any more
        pass


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


_HELPERS: weakref.WeakSet[JobHelper] = weakref.WeakSet()


def _flush_at_exit() -> None:
    """An acknowledgement queued just before the script ends must still reach the gateway."""
    for helper in list(_HELPERS):
        if helper._ack_out is not None and helper._thread is not None and not helper._closing:
            if not helper.flush(helper.exit_flush_s):
                log.warning("dcflex: exiting with the checkpoint acknowledgement undelivered (gateway %s unreachable)",
                            helper.gateway_url)


def _reset_after_fork() -> None:
    for helper in list(_HELPERS):
        helper._after_fork()


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
