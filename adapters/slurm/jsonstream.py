"""Read one large JSON object and stream the elements of its big list, one element at a time.

``squeue --json`` prints every field of every job (3.5 KB per job on 22.05, 9 KB on 24.05), so a
100 000-job cluster yields a 350-900 MB document, and decoding it whole builds gigabytes of dicts
before the first job is converted. Here the elements of the one list that matters (``jobs``,
``nodes``, ``sinfo``) are decoded one at a time with ``orjson`` and handed to the caller, who keeps
what it needs and drops the dict; every other top-level value (``meta``, ``errors``, ...), small by
nature, is kept in ``header``. The input is read as bytes (no text decoding pass: ``orjson`` checks
the UTF-8 of what it decodes, and the bytes between values are checked here).

Finding where one element ends is the costly part in Python, so there are two ways:

- the exact scanner (``_Window.value``) skips strings and everything but brackets with one regular
  expression per bracket, and counts nesting. It reads any valid JSON, cut anywhere;
- the fast path: once two consecutive elements have been read exactly, the bytes around their
  boundary are learned, e.g. ``\\n    },\\n    {\\n      "account"`` (the closing brace with its
  indentation, the comma, the next element's opening brace and first key: Slurm prints every job
  with the same layout and key order). Each next boundary is then found with ``bytes.find`` and the
  element between is decoded. The pattern cannot start inside a string (a ``"`` inside a string is
  always escaped), and ``orjson`` accepting the slice as one whole value proves the cut is the
  element's true end (a value starting at ``{`` ends at its matching ``}``); a slice it rejects
  is read again by the exact scanner, which then also gives the precise error.

Values the caller never reads can be ``elide``d: in an element of ``ELIDE_FROM_BYTES`` or more (a
24.05 job on many nodes lists every allocated core: hundreds of KB), the value under such a key is
replaced by an empty list before decoding, when the layout shows where it ends (``_elided``).

Bytes come in windows of ``chunk_bytes`` (bytes input is used in place); an element cut by a
window's end is completed from the next window, so nothing depends on where the cuts fall.
Offsets in errors count bytes of the UTF-8 input from its start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import orjson

__all__ = ["CHUNK_BYTES", "JsonSyntaxError", "StreamedObject"]

CHUNK_BYTES = 4 * 1024 * 1024
MAX_VALUE_BYTES = 256 * 1024 * 1024  # one job/node larger than this is not Slurm output
ELIDE_FROM_BYTES = 64 * 1024  # smaller elements are decoded whole: looking for what to cut costs more than it saves
_MAX_PATTERN = 256  # a learned boundary longer than this (a huge first key) is not worth searching for

_WS = re.compile(rb"[ \t\n\r]*")
_STR = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRING = re.compile(_STR, re.DOTALL)
# Everything up to the next bracket outside a string (or the opening quote of a string cut by the window).
_SKIP = re.compile(rb'(?:[^"\[\]{}]+|' + _STR + rb")*", re.DOTALL)
_SCALAR = re.compile(rb'[^ \t\n\r,:\[\]{}"]*')
# What follows an element that ends with "}": comma, the next element's "{" and its first key.
_NEXT = re.compile(rb"[ \t\n\r]*,[ \t\n\r]*\{[ \t\n\r]*" + _STR, re.DOTALL)
_OPEN = frozenset(b"{[")
_loads = orjson.loads
_DecodeError = orjson.JSONDecodeError


class JsonSyntaxError(ValueError):
    """The text is not JSON, or not the expected shape; ``offset`` counts bytes from the start."""

    def __init__(self, message: str, offset: int, path: str) -> None:
        self.offset = offset
        self.path = path
        super().__init__(f"{message} at {path} (byte {offset})")


def _str_chunks(text: str, size: int) -> Iterator[bytes]:
    for i in range(0, len(text), size):
        yield text[i:i + size].encode("utf-8")


def _view_chunks(data: bytearray | memoryview, size: int) -> Iterator[bytes]:
    raw = memoryview(data).cast("B")
    for i in range(0, len(raw), size):
        yield bytes(raw[i:i + size])


class _Window:
    """A sliding window over the input bytes; ``base`` is the absolute offset of ``buf[0]``."""

    def __init__(self, data: str | bytes | bytearray | memoryview | Iterable[bytes], chunk_bytes: int) -> None:
        self.base = 0
        self.pos = 0
        self.chunk = chunk_bytes
        self.buf: bytes = b""
        self.eof = False
        self._chunks: Iterator[bytes] | None = None
        if isinstance(data, bytes):
            self.buf, self.eof = data, True  # in place: no copy of a document that may be 900 MB
        elif isinstance(data, str):
            self._chunks = _str_chunks(data, chunk_bytes)
        elif isinstance(data, bytearray | memoryview):
            self._chunks = _view_chunks(data, chunk_bytes)  # a copy of the caller's buffer could change under us
        else:
            self._chunks = iter(data)

    def more(self) -> bool:
        """Append the next chunk (dropping what was consumed); ``False`` at the end of the input."""
        if self.eof or self._chunks is None:
            self.eof = True
            return False
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.eof = True
            return False
        except UnicodeEncodeError as exc:  # a str with lone surrogates
            raise JsonSyntaxError(f"not valid Unicode text ({exc.reason})", self.base + len(self.buf), "$") from exc
        if self.pos:
            self.base += self.pos
            self.buf = self.buf[self.pos:] + chunk
            self.pos = 0
        else:
            self.buf = self.buf + chunk
        return True

    def peek(self) -> int:
        """Skip whitespace; the next byte, or ``-1`` at the end of the input."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return -1

    def expect(self, chars: bytes, path: str) -> int:
        ch = self.peek()
        if ch < 0 or ch not in chars:
            wanted = " or ".join(repr(chr(c)) for c in chars)
            raise JsonSyntaxError(f"expected {wanted}, found {self.describe()}", self.offset, path)
        self.pos += 1
        return ch

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def describe(self) -> str:
        """The character at ``pos`` for a message (``'x'``, ``the end of the input``, invalid UTF-8)."""
        if self.pos >= len(self.buf):
            return "the end of the input"
        for n in range(1, 5):
            try:
                return repr(self.buf[self.pos:self.pos + n].decode("utf-8"))
            except UnicodeDecodeError:
                continue
        return f"invalid UTF-8 (byte 0x{self.buf[self.pos]:02x})"

    def need_more(self, path: str) -> None:
        """The value at ``pos`` goes on past the window: read on, or say why it cannot be read."""
        if not self.eof and len(self.buf) - self.pos > MAX_VALUE_BYTES:
            raise JsonSyntaxError(f"a value larger than {MAX_VALUE_BYTES} bytes", self.offset, path)
        if not self.more():
            raise JsonSyntaxError("not valid JSON (the input ends inside this value)", self.offset, path)

    def value_end(self, path: str) -> int:
        """Where the value at ``pos`` ends in ``buf``, reading more input as needed (not validated)."""
        first = self.peek()
        if first < 0:
            raise JsonSyntaxError("expected a value, found the end of the input", self.offset, path)
        if first in _OPEN:
            depth, rel = 0, 0  # rel: where to resume, relative to pos (which more() may move)
            while True:
                buf, p = self.buf, self.pos + rel
                n = len(buf)
                while True:
                    p = _SKIP.match(buf, p).end()  # type: ignore[union-attr]
                    if p >= n or buf[p] == 0x22:  # window's end, or a string it cuts
                        break
                    if buf[p] in _OPEN:
                        depth += 1
                    else:
                        depth -= 1
                        if depth == 0:
                            return p + 1
                    p += 1
                rel = p - self.pos
                self.need_more(path)
        if first == 0x22:
            while (m := _STRING.match(self.buf, self.pos)) is None:
                self.need_more(path)
            return m.end()
        while True:  # a number, true, false, null
            end = _SCALAR.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if end < len(self.buf) or self.eof:
                if end == self.pos:
                    raise JsonSyntaxError(f"expected a value, found {self.describe()}", self.offset, path)
                return end
            self.need_more(path)

    def value(self, path: str) -> object:
        """Decode one complete JSON value at ``pos`` (after whitespace) and move past it."""
        end = self.value_end(path)
        raw = self.buf[self.pos:end]
        try:
            obj = _loads(raw)
        except _DecodeError as exc:
            raise self.decode_error(exc, raw, path) from None
        self.pos = end
        return obj

    def decode_error(self, exc: _DecodeError, raw: bytes, path: str) -> JsonSyntaxError:
        if "UTF-8" in exc.msg:
            return JsonSyntaxError(f"invalid UTF-8 ({exc.msg})", self.offset, path)
        at = len(raw.decode("utf-8", "replace")[:exc.pos].encode("utf-8"))  # orjson counts characters
        return JsonSyntaxError(f"not valid JSON ({exc.msg})", self.offset + at, path)

    def key(self, path: str) -> str:
        if self.peek() != 0x22:
            raise JsonSyntaxError(f"expected '\"', found {self.describe()}", self.offset, path)
        return str(self.value(path))


class StreamedObject:
    """A top-level JSON object whose list under one of ``stream_keys`` is read element by element.

    Iterate ``items()`` once: it yields ``(key, index, element)`` for the streamed list and fills
    ``header`` with every other top-level key (whichever order Slurm prints them in). ``found`` is the
    streamed key, or ``None`` when the document has none of them.
    """

    def __init__(self, data: str | bytes | bytearray | memoryview | Iterable[bytes], stream_keys: Iterable[str], *,
                 chunk_bytes: int = CHUNK_BYTES, elide: Iterable[str] = ()) -> None:
        self._w = _Window(data, chunk_bytes)
        self._keys = frozenset(stream_keys)
        self._elide = tuple(b'"%s": ' % k.encode() for k in elide)  # in the order they appear in an element
        self._boundary: tuple[bytes, int, int] | None = None  # pattern, its offsets of element end and next start
        self._shortest = MAX_VALUE_BYTES  # the shortest element read exactly so far
        self.header: dict[str, object] = {}
        self.found: str | None = None

    def items(self) -> Iterator[tuple[str, int, object]]:
        w = self._w
        first = w.peek()
        if first < 0:
            raise JsonSyntaxError("empty document", 0, "$")
        if first != 0x7B:
            what = w.describe()
            if what.startswith("invalid"):
                raise JsonSyntaxError(what, w.offset, "$")
            start = w.buf[w.pos:w.pos + 20].decode("utf-8", "replace")
            raise JsonSyntaxError(f"not a JSON object (it starts with {start!r})", w.offset, "$")
        w.pos += 1
        if w.peek() == 0x7D:
            w.pos += 1
        else:
            while True:
                key = w.key("$")
                path = f"$.{key}"
                w.expect(b":", path)
                if key in self._keys and self.found is None:
                    self.found = key
                    yield from self._stream_list(key, path)
                else:
                    self.header[key] = w.value(path)
                if w.expect(b",}", "$") == 0x7D:
                    break
        if w.peek() >= 0:
            raise JsonSyntaxError("extra data after the top-level object", w.offset, "$")

    def _stream_list(self, key: str, path: str) -> Iterator[tuple[str, int, object]]:
        w = self._w
        if w.peek() != 0x5B:
            raise JsonSyntaxError("expected a list", w.offset, path)
        w.pos += 1
        if w.peek() == 0x5D:
            w.pos += 1
            return
        index = 0
        while True:
            # w.pos is at an element's first byte here.
            if self._boundary is not None:
                pattern, to_end, to_next = self._boundary
                # No element seen so far was shorter than this: start looking for its end that far in. A
                # shorter one makes the slice hold two elements, which orjson rejects: read exactly instead.
                skip = max(0, self._shortest - to_end)
                buf, pos = w.buf, w.pos
                find, elided = buf.find, self._elided
                elide_from = ELIDE_FROM_BYTES if self._elide else MAX_VALUE_BYTES
                while (cut := find(pattern, pos + skip)) >= 0:
                    end = cut + to_end
                    try:
                        # Cutting must stay inside one element: if the skip jumped a boundary, decode the slice
                        # as it is (two elements: rejected, then read exactly), never join them by a cut.
                        obj = _loads(buf[pos:end] if end - pos < elide_from or find(pattern, pos, cut) >= 0
                                     else elided(buf, pos, end))
                    except _DecodeError:
                        break  # not where this element ends after all: the exact scanner takes it
                    yield key, index, obj
                    index += 1
                    pos = cut + to_next
                w.pos = pos
                if cut < 0 and not w.eof and len(buf) - pos < 2 * (w.chunk + self._shortest):
                    w.more()  # the element probably goes on in the next window
                    continue
            start = w.offset
            obj = w.value(f"{path}[{index}]")
            self._shortest = min(self._shortest, w.offset - start)
            self._learn()
            yield key, index, obj
            index += 1
            if w.expect(b",]", path) == 0x5D:
                return
            w.peek()

    def _elided(self, buf: bytes, pos: int, end: int) -> bytes:
        """The element ``buf[pos:end]`` with the values under the ``elide`` keys emptied, where it is pretty-printed.

        A value is cut only when it opens on its key's line, and a line indented like the key's closes it.
        That relies on a consistent layout, which Slurm's printer has: the value's own lines are deeper, and
        a string holds no newline. What remains is still decoded, and checked, by ``orjson``; a cut that
        leaves something other than one JSON value sends the element to the exact scanner, uncut."""
        pieces: list[bytes] = []
        start = pos
        for key in self._elide:
            at = buf.find(key, start, end)
            if at < 0:
                continue
            value = at + len(key)
            opener = buf[value]
            line = buf.rfind(b"\n", start, at) + 1
            indent = buf[line:at]
            if not line or opener not in _OPEN or indent.strip(b" "):
                continue
            close = b"\n" + indent + (b"]" if opener == 0x5B else b"}")
            stop = buf.find(close, value, end)
            if stop < 0:
                continue
            pieces += (buf[start:value], b"[]" if opener == 0x5B else b"{}")
            start = stop + len(close)
        if not pieces:
            return buf[pos:end]
        pieces.append(buf[start:end])
        return b"".join(pieces)

    def _learn(self) -> None:
        """Learn the bytes around the boundary between the element that ends at ``pos`` and the next."""
        w = self._w
        buf, end = w.buf, w.pos
        if buf[end - 1] != 0x7D:
            return
        nxt = _NEXT.match(buf, end)
        if nxt is None or nxt.end() - end > _MAX_PATTERN:
            return  # not an object next, or not all in this window: try again at the next element
        start = end - 1
        while start > end - 32 and buf[start - 1] in b" \t\n\r":
            start -= 1
        brace = buf.index(b"{", end)
        self._boundary = (buf[start:nxt.end()], end - start, brace - start)
