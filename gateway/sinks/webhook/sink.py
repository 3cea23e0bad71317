"""POST each notice record to ``notices.webhook_url``, in order, signed, retried, nothing lost.

Body: the notice as JSON (the fields of the MQTT ``…/notices`` payload: ``notice_id``, ``action``,
``drop_at``, ``drop_kw``, ``exact``, ``reason``, ...), with ``site`` and ``at``. Headers:
``X-Dcflex-Timestamp`` (Unix seconds) and ``X-Dcflex-Signature: sha256=<hex>``, the HMAC-SHA256 of
``"<timestamp>.<body>"`` under ``notices.webhook_secret`` (``sign``): a receiver recomputes it over the
raw body, compares in constant time and rejects stale timestamps (replays). Notices go through the
journal's outbox first (channel ``webhook``), so a receiver that is down, or a gateway restart, loses
none: a failed POST is retried ``webhook_retries`` times with doubling waits, then alerted
(``webhook_failed``, once per outage) and retried again from the next cycle, the messages behind it waiting (order
matters: a cancel must not overtake its notice). A 4xx other than 408/429 is a refusal, not an outage:
alerted, and that message dropped, so one bad message cannot block every later one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp

from gateway.clock import Clock
from gateway.config.models import NoticesConfig
from gateway.journal import Outbox

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookSink", "sign"]

log = logging.getLogger("dcflex.sinks.webhook")

SIGNATURE_HEADER = "X-Dcflex-Signature"
TIMESTAMP_HEADER = "X-Dcflex-Timestamp"
CHANNEL = "webhook"
Problem = Callable[[str, str], Awaitable[None]]


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSink:
    def __init__(self, cfg: NoticesConfig, outbox: Outbox, *, clock: Clock, on_problem: Problem, site: str) -> None:
        if cfg.webhook_url is None or cfg.webhook_secret is None:
            raise ValueError("the webhook sink needs notices.webhook_url and notices.webhook_secret")
        self.url = cfg.webhook_url
        self._secret = cfg.webhook_secret.get_secret_value().encode()
        self.cfg = cfg
        self.outbox = outbox
        self.clock = clock
        self.on_problem = on_problem
        self.site = site
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.refused = 0
        self._failing = False

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        if kind != "notice":
            return
        body = {"site": self.site, "at": self.clock.now().isoformat(), **payload}
        self.outbox.put(CHANNEL, [json.dumps(body, sort_keys=True, default=str)])
        self._wake.set()

    async def run(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.webhook_timeout_s))
        try:
            while True:
                for row_id, text in self.outbox.pending(CHANNEL, limit=100):
                    if not await self._deliver(text):
                        break  # the receiver is down: the rest wait, in order
                    self.outbox.done([row_id])
                else:
                    self._wake.clear()
                    if not self.outbox.count(CHANNEL):
                        await self._wake.wait()
                    continue
                await self.clock.sleep(self.cfg.webhook_backoff_s * 2 ** self.cfg.webhook_retries)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def stats(self) -> Mapping[str, object]:
        return {"url": self.url, "sent": self.sent, "failed_attempts": self.failed, "refused": self.refused,
                "pending": self.outbox.count(CHANNEL)}

    async def _deliver(self, text: str) -> bool:
        """True when the message is done with (delivered, or refused for good)."""
        body = text.encode()
        last = ""
        for attempt in range(self.cfg.webhook_retries + 1):
            if attempt:
                await self.clock.sleep(self.cfg.webhook_backoff_s * 2 ** (attempt - 1))
            status, last = await self._post(body)
            if 200 <= status < 300:
                self.sent += 1
                if self._failing:
                    log.info("webhook %s reachable again", self.url)
                self._failing = False
                return True
            self.failed += 1
            if 400 <= status < 500 and status not in (408, 429):
                self.refused += 1
                await self.on_problem("webhook_refused", f"webhook {self.url} refused a notice with HTTP {status} "
                                      f"({last}); it is dropped, later notices go on. Check the receiver's "
                                      "secret and format")
                return True
        if not self._failing:  # once per outage, not once per cycle
            await self.on_problem("webhook_failed", f"webhook {self.url}: notice not delivered after "
                                  f"{self.cfg.webhook_retries + 1} attempt(s) ({last}); kept, retried later")
        self._failing = True
        return False

    async def _post(self, body: bytes) -> tuple[int, str]:
        assert self._http is not None
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts,
                   SIGNATURE_HEADER: sign(self._secret, ts, body)}
        try:
            async with self._http.post(self.url, data=body, headers=headers) as resp:
                text = (await resp.text())[:200]
                return resp.status, f"HTTP {resp.status}: {text}" if resp.status >= 300 else ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"
