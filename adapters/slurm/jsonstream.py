"""Read one large JSON object and stream the elements of its big list, a few MB of text at a time.

``squeue --json`` prints every field of every job (3.5 KB per job on 22.05, more on 24.05), so a
100 000-job cluster yields a 350 MB document. ``json.loads`` on that builds ~1 GB of dicts before the
first job is converted. Here the top-level object is walked with the standard library's own scanner
(``raw_decode``): the elements of the one list that matters (``jobs``, ``nodes``, ``sinfo``) are
decoded one at a time and handed to the caller, who keeps what it needs and drops the dict; every
other top-level value (``meta``, ``errors``, ...), small by nature, is kept in ``header``.

Bytes are decoded incrementally in windows of ``chunk_chars``; a value cut by the window's end fails
to decode and is retried with the next window appended, so nothing depends on where the cuts fall.
A value is taken as complete only when text follows it (or the input has ended), which keeps a number
cut at ``12|345`` from being read as ``12``.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator

__all__ = ["JsonSyntaxError", "StreamedObject"]

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]

CHUNK_CHARS = 4 * 1024 * 1024
MAX_VALUE_CHARS = 256 * 1024 * 1024  # one job/node larger than this is not Slurm output


class JsonSyntaxError(ValueError):
    """The text is not JSON, or not the expected shape; ``offset`` counts characters from the start."""

    def __init__(self, message: str, offset: int, path: str) -> None:
        self.offset = offset
        self.path = path
        super().__init__(f"{message} at {path} (character {offset})")


class _Text:
    """A sliding window over the input text; ``base`` is the absolute offset of ``text[0]``."""

    def __init__(self, data: str | bytes | bytearray | memoryview | Iterable[bytes], chunk_chars: int) -> None:
        self.base = 0
        self._chunks: Iterator[bytes] | None
        if isinstance(data, str):
            self.text, self.eof, self._chunks = data, True, None
            self._decoder = None
        else:
            self.text, self.eof = "", False
            self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
            if isinstance(data, bytes | bytearray | memoryview):
                raw = memoryview(data).cast("B")
                self._chunks = (bytes(raw[i:i + chunk_chars]) for i in range(0, len(raw), chunk_chars))
            else:
                self._chunks = iter(data)
        self.pos = 0

    def more(self) -> bool:
        """Append the next chunk (dropping what was consumed); ``False`` at the end of the input."""
        if self.eof or self._chunks is None or self._decoder is None:
            self.eof = True
            return False
        try:
            chunk = next(self._chunks)
            final = False
        except StopIteration:
            chunk, final = b"", True
        try:
            new = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            raise JsonSyntaxError(f"invalid UTF-8 ({exc.reason})", self.base + len(self.text), "$") from exc
        self.eof = final
        if self.pos:
            self.base += self.pos
            self.text = self.text[self.pos:] + new
            self.pos = 0
        else:
            self.text += new
        return True

    def skip_ws(self) -> str:
        """Skip whitespace; the next character, or ``""`` at the end of the input."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, chars: str, path: str) -> str:
        ch = self.skip_ws()
        if not ch or ch not in chars:
            what = repr(ch) if ch else "the end of the input"
            raise JsonSyntaxError(f"expected {' or '.join(repr(c) for c in chars)}, found {what}", self.offset, path)
        self.pos += 1
        return ch

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def value(self, path: str) -> object:
        """Decode one complete JSON value at the current position."""
        self.skip_ws()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.text, self.pos)
                if end < len(self.text) or self.eof:
                    self.pos = end
                    return obj
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise JsonSyntaxError(f"not valid JSON ({exc.msg})", self.base + exc.pos, path) from exc
            if len(self.text) - self.pos > MAX_VALUE_CHARS:
                raise JsonSyntaxError(f"a value larger than {MAX_VALUE_CHARS} characters", self.offset, path)
            self.more()

    def key(self, path: str) -> str:
        self.expect('"', path)
        while True:
            try:
                key, end = _scanstring(self.text, self.pos)
                self.pos = end
                return str(key)
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise JsonSyntaxError(f"not valid JSON ({exc.msg})", self.base + exc.pos, path) from exc
                self.more()


class StreamedObject:
    """A top-level JSON object whose list under one of ``stream_keys`` is read element by element.

    Iterate ``items()`` once: it yields ``(key, index, element)`` for the streamed list and fills
    ``header`` with every other top-level key (whichever order Slurm prints them in). ``found`` is the
    streamed key, or ``None`` when the document has none of them.
    """

    def __init__(self, data: str | bytes | bytearray | memoryview | Iterable[bytes], stream_keys: Iterable[str], *,
                 chunk_chars: int = CHUNK_CHARS) -> None:
        self._text = _Text(data, chunk_chars)
        self._keys = frozenset(stream_keys)
        self.header: dict[str, object] = {}
        self.found: str | None = None

    def items(self) -> Iterator[tuple[str, int, object]]:
        t = self._text
        first = t.skip_ws()
        if not first:
            raise JsonSyntaxError("empty document", 0, "$")
        if first != "{":
            raise JsonSyntaxError(f"not a JSON object (it starts with {t.text[t.pos:t.pos + 20]!r})", t.offset, "$")
        t.pos += 1
        if t.skip_ws() == "}":
            t.pos += 1
        else:
            while True:
                key = t.key("$")
                path = f"$.{key}"
                t.expect(":", path)
                if key in self._keys and self.found is None:
                    self.found = key
                    yield from self._stream_list(key, path)
                else:
                    self.header[key] = t.value(path)
                if t.expect(",}", "$") == "}":
                    break
        if t.skip_ws():
            raise JsonSyntaxError("extra data after the top-level object", t.offset, "$")

    def _stream_list(self, key: str, path: str) -> Iterator[tuple[str, int, object]]:
        t = self._text
        if t.skip_ws() != "[":
            raise JsonSyntaxError("expected a list", t.offset, path)
        t.pos += 1
        if t.skip_ws() == "]":
            t.pos += 1
            return
        index = 0
        while True:
            yield key, index, t.value(f"{path}[{index}]")
            index += 1
            if t.expect(",]", path) == "]":
                return
