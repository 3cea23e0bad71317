"""The VEN's HTTP exchange with the VTN, bounded: what comes back is read streamed and stops at a limit.

Why: openleadr reads a whole answer into memory (and aiohttp inflates a gzip body before anyone can count it), so
1 MB on the wire could become 1 GiB in the process. Here the session asks for no automatic decompression; the body
is read in chunks and counted on the wire, then inflated chunk by chunk with a bound on the output, and the first
byte past a limit ends the read (``HostileInput``). Redirects are never followed off the VTN's origin (scheme, host
and port), so never from https to http either; on the same origin a 301/302/307/308 is followed (as a POST again),
at most ``MAX_REDIRECTS`` times.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import aiohttp
from yarl import URL

from gateway.config.models import VenLimits
from gateway.exceptions import HostileInput

__all__ = ["MAX_REDIRECTS", "Reply", "post_bounded", "session_options"]

MAX_REDIRECTS = 3
_CHUNK = 64 * 1024
_FOLLOW = frozenset({301, 302, 307, 308})
_REDIRECT = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: its status, the URL that gave it and the (decompressed, bounded) body."""

    status: int
    url: str
    body: bytes


def session_options() -> dict[str, object]:
    """What the VEN's ``aiohttp.ClientSession`` needs for bounded reads: no automatic inflation, and only the
    encodings this module can inflate under a bound."""
    return {"auto_decompress": False,
            "headers": {"content-type": "application/xml", "Accept-Encoding": "gzip, deflate"}}


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


class _Inflater:
    """Decompresses chunk by chunk, never producing more than ``limit`` bytes in all."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._limit = limit
        self._out = bytearray()
        coding = encoding.strip().lower()
        if coding in ("", "identity"):
            self._z: zlib._Decompress | None = None
        elif coding in ("gzip", "x-gzip", "deflate"):
            self._z = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, detected
        else:
            raise HostileInput("content_encoding", f"Content-Encoding {encoding[:40]!r} is not one dcflex accepts "
                               "(identity, gzip, deflate)", where="Content-Encoding header")

    def feed(self, chunk: bytes) -> None:
        if self._z is None:
            self._add(chunk)
            return
        data = chunk
        while data:
            try:
                out = self._z.decompress(data, self._limit - len(self._out) + 1)
            except zlib.error as err:
                raise HostileInput("content_encoding", f"the compressed body is corrupt ({err})", where="body") from None
            self._add(out)
            data = self._z.unconsumed_tail
            if self._z.eof:
                break

    def _add(self, data: bytes) -> None:
        if len(self._out) + len(data) > self._limit:
            raise HostileInput("too_large", f"the body inflates past {self._limit} bytes (max_body_bytes)", where="body")
        self._out += data

    def result(self) -> bytes:
        if self._z is not None and not self._z.eof and self._out:
            raise HostileInput("content_encoding", "the compressed body ends before its end marker", where="body")
        return bytes(self._out)


async def _read(response: aiohttp.ClientResponse, limits: VenLimits) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limits.max_wire_bytes:
        raise HostileInput("too_large", f"Content-Length {declared} is more than {limits.max_wire_bytes} bytes "
                           "(max_wire_bytes)", where="Content-Length header")
    inflater = _Inflater(response.headers.get("Content-Encoding", ""), limits.max_body_bytes)
    wire = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        wire += len(chunk)
        if wire > limits.max_wire_bytes:
            raise HostileInput("too_large", f"more than {limits.max_wire_bytes} bytes on the wire (max_wire_bytes)",
                               where="body")
        inflater.feed(chunk)
    return inflater.result()


async def post_bounded(session: aiohttp.ClientSession, url: str, data: str | bytes, limits: VenLimits) -> Reply:
    """POST ``data`` to ``url`` and read the answer under ``limits``; same-origin redirects only.

    Raises ``HostileInput`` (a redirect off the origin, a body past a limit, an encoding it cannot bound) and
    whatever aiohttp raises for the transport (the caller's timeout applies to the whole exchange).
    """
    origin = _origin(URL(url))
    target = URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        async with session.post(target, data=data, allow_redirects=False) as response:
            if response.status in _REDIRECT:
                location = response.headers.get("Location", "")
                try:
                    goto = response.url.join(URL(location)) if location else None
                except ValueError:
                    goto = None
                if goto is None or _origin(goto) != origin or response.status not in _FOLLOW:
                    shown = str(goto)[:200] if goto is not None else "(no Location)"
                    raise HostileInput("redirect", f"the VTN answered {response.status} to {target} with Location "
                                       f"{shown}; dcflex follows no redirect off the VTN's origin "
                                       f"({origin[0]}://{origin[1]}:{origin[2]}) and no 303: set ven.vtn_url to the "
                                       "address the VTN really serves", where="Location header")
                target = goto
                continue
            return Reply(response.status, str(response.url), await _read(response, limits))
    raise HostileInput("redirect", f"more than {MAX_REDIRECTS} redirects from {url}", where="Location header")
