"""The streaming reader of ``squeue --json``: its fast path (learned element boundaries) and elided lists must
give exactly what the standard library's ``json`` gives, wherever the read windows cut the input."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.slurm import jsonstream
from adapters.slurm.jsonstream import ELIDE_FROM_BYTES, StreamedObject
from adapters.slurm.parse import parse_squeue
from gateway.exceptions import AdapterError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRICKY = [
    '}, {"account": "x"}',
    "\n    },\n    {\n      \"account\": ",  # the learned boundary itself, inside a string (escaped there)
    'quote " and backslash \\',
    "ends with a backslash \\",
    "[unbalanced {brackets",
    "}}]]",
    "entraînement-🚀 \u2028",
]


def fixture(version: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"slurm-{version}" / "squeue.json").read_bytes()))


def document(version: str, n: int, *, indent: int | None = 2, tweak: Any = None) -> tuple[bytes, dict[str, Any]]:
    """``n`` jobs cycled from the fixture with new ids; ``tweak(i, job)`` may change each; (bytes, as json reads them)."""
    d = fixture(version)
    base = d["jobs"]
    jobs = []
    for i in range(n):
        job = copy.deepcopy(base[i % len(base)])
        job["job_id"] = 1000 + i
        if tweak is not None:
            tweak(i, job)
        jobs.append(job)
    d["jobs"] = jobs
    text = json.dumps(d, indent=indent, ensure_ascii=False).encode()
    return text, json.loads(text)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


def nth(data: bytes, needle: bytes, n: int) -> int:
    """Where ``needle`` occurs for the ``n``-th time (from 0) in the jobs list."""
    at = data.index(b'"jobs"')
    for _ in range(n + 1):
        at = data.index(needle, at + 1)
    return at


def streamed(data: Any, *, chunk_bytes: int = 4 << 20, elide: tuple[str, ...] = ()) -> tuple[list[Any], StreamedObject]:
    stream = StreamedObject(data, ["jobs"], chunk_bytes=chunk_bytes, elide=elide)
    return [obj for _, _, obj in stream.items()], stream


# ---------------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("version", ["22.05", "24.05"])
@pytest.mark.parametrize("size", [1000, 4096, 10_007, 1 << 20])
def test_fast_path_gives_what_json_gives_wherever_the_windows_cut(version: str, size: int) -> None:
    data, expected = document(version, 60)
    jobs, stream = streamed(chunks(data, size), chunk_bytes=size)
    assert jobs == expected["jobs"]
    assert stream.header == {k: v for k, v in expected.items() if k != "jobs"}
    assert stream._boundary is not None  # the boundary was learned: most elements took the fast path


@pytest.mark.parametrize("indent", [2, None])
def test_strings_that_look_like_json_structure(indent: int | None) -> None:
    def tweak(i: int, job: dict[str, Any]) -> None:
        job["comment"] = TRICKY[i % len(TRICKY)]
        job["name"] = TRICKY[(i + 3) % len(TRICKY)] * (i % 4)

    data, expected = document("22.05", 40, indent=indent, tweak=tweak)
    for size in (997, 8192, len(data)):
        jobs, _ = streamed(chunks(data, size), chunk_bytes=size)
        assert jobs == expected["jobs"]
    jobs, _ = streamed(data)
    assert jobs == expected["jobs"]
    assert [j.comment for j in parse_squeue(data)] == [j["comment"] for j in expected["jobs"]]


def test_compact_layout_whose_jobs_hold_lookalike_boundaries() -> None:
    """Without indentation the learned ``}, {"account"`` also occurs inside a job: those slices are rejected
    by the decoder and read exactly, so every job still comes out whole and in order."""

    def tweak(i: int, job: dict[str, Any]) -> None:
        job["job_resources"] = {"allocated_nodes": [{"account": n, "x": {}} for n in range(i % 5)]}

    data, expected = document("22.05", 30, indent=None, tweak=tweak)
    assert b'}, {"account"' in data
    for size in (1500, len(data)):
        jobs, _ = streamed(chunks(data, size), chunk_bytes=size)
        assert jobs == expected["jobs"]


def test_a_job_shorter_than_every_one_before() -> None:
    def tweak(i: int, job: dict[str, Any]) -> None:
        job["comment"] = "x" * (3000 - 100 * i if i < 25 else 7)

    data, expected = document("22.05", 30, tweak=tweak)
    jobs, _ = streamed(data)
    assert jobs == expected["jobs"]
    assert parse_squeue(data) == parse_squeue(expected)


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("size", [4096, 1 << 22])
def test_a_syntax_error_deep_in_the_stream_names_its_job(size: int) -> None:
    data, _ = document("22.05", 30)
    at = nth(data, b'"name": ', 20)
    bad = data[:at] + b'"name" ' + data[at + 8:]
    with pytest.raises(AdapterError) as err:
        parse_squeue(chunks(bad, size))
    message = str(err.value)
    assert "not valid JSON" in message and "at $.jobs[20] (byte " in message
    offset = int(message.rsplit("(byte ", 1)[1].rstrip(")"))
    assert at <= offset <= at + 10


def test_invalid_utf8_inside_a_job() -> None:
    data, _ = document("22.05", 20)
    at = nth(data, b'"comment": "', 12) + len(b'"comment": "')
    with pytest.raises(AdapterError, match=r"invalid UTF-8 .* at \$\.jobs\[12\]"):
        parse_squeue(data[:at] + b"\xff" + data[at:])


@pytest.mark.parametrize("size", [500, 1 << 22])
def test_input_that_ends_inside_a_job(size: int) -> None:
    data, _ = document("22.05", 20)
    cut = data[:data.index(b'"job_id": 1017') + 5]
    with pytest.raises(AdapterError, match=r"the input ends inside this value\) at \$\.jobs\[17\]"):
        parse_squeue(chunks(cut, size))


def test_text_that_cannot_be_utf8() -> None:
    data, _ = document("22.05", 3)
    text = data.decode().replace('"name": "', '"name": "\ud800', 1)
    with pytest.raises(AdapterError, match="not valid Unicode text"):
        parse_squeue(text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"jobs": [,]}', "expected a value, found ',' at $.jobs[0] (byte 10)"),
        (b'{"meta": }', "expected a value, found '}' at $.meta (byte 9)"),
        (b'{"jobs" []}', "expected ':', found '[' at $.jobs (byte 8)"),
        (b'{jobs: []}', "expected '\"', found 'j' at $ (byte 1)"),
        (b'{"jobs": [1 2]}', "expected ',' or ']', found '2' at $.jobs (byte 12)"),
        (b'{"meta": {"a": \xe9t\xe9}}', "invalid UTF-8"),
    ],
)
def test_structure_errors_say_what_and_where(data: bytes, message: str) -> None:
    for form in (data, chunks(data, 3)):
        with pytest.raises(AdapterError) as err:
            parse_squeue(form)
        assert message in str(err.value)


def test_a_job_larger_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonstream, "MAX_VALUE_BYTES", 2000)
    data, _ = document("22.05", 3)
    with pytest.raises(AdapterError, match=r"a value larger than 2000 bytes at \$\.jobs\[0\]"):
        parse_squeue(chunks(data, 500))


# ------------------------------------------------------------------------------- elided lists


def big_jobs(n: int) -> bytes:
    """``n`` copies of a 24.05 job on 24 nodes of 2 x 32 cores (24.05 lists every allocated core)."""
    d = fixture("24.05")
    job = d["jobs"][0]
    node = job["job_resources"]["nodes"]["allocation"][0]
    job["job_resources"]["nodes"]["allocation"] = [
        dict(node, index=n, name=f"gpu{n:03d}", sockets=[
            {"index": s, "cores": [{"index": c, "status": ["ALLOCATED"]} for c in range(32)]} for s in range(2)])
        for n in range(24)
    ]
    d["jobs"] = [dict(job, job_id=1000 + i) for i in range(n)]
    data = json.dumps(d, indent=2).encode()
    assert len(data) // n > ELIDE_FROM_BYTES
    return data


def allocations(jobs: list[Any]) -> list[bool]:
    return [bool(j["job_resources"]["nodes"]["allocation"]) for j in jobs]


def test_large_allocation_lists_are_not_decoded() -> None:
    data = big_jobs(4)
    expected = json.loads(data)
    jobs, _ = streamed(data, elide=("allocated_nodes", "allocation"))
    # The first job is read exactly, to learn the layout, and so is the last: no boundary follows it.
    assert allocations(jobs) == [True, False, False, True]
    for job, want in zip(jobs[1:3], expected["jobs"][1:3], strict=True):
        want["job_resources"]["nodes"]["allocation"] = []
        assert job == want
    assert (jobs[0], jobs[3]) == (expected["jobs"][0], expected["jobs"][3])
    assert parse_squeue(data) == parse_squeue(expected)  # the parser never needed them


def test_allocation_lists_laid_out_otherwise_are_decoded_whole() -> None:
    data = big_jobs(5)
    key = b'"allocation": ['
    third = data.index(key, data.index(key, data.index(key) + 1) + 1)  # job 2's
    # On one line: no closing line to find, so nothing is cut.
    close = data.index(b"\n          ]", third)
    inline = data[:third] + data[third:close].replace(b"\n", b" ") + data[close + 1:]
    # An inner list closing at the key's indentation: cutting there leaves no JSON, so the job is read exactly.
    cores_end = b"\n" + b" " * 18 + b"]"
    inner = data.index(cores_end, third)
    dedented = data[:inner] + b"\n          ]" + data[inner + len(cores_end):]
    for doc in (inline, dedented):
        jobs, _ = streamed(doc, elide=("allocation",))
        assert allocations(jobs) == [True, False, True, False, True]
        assert jobs[2] == json.loads(doc)["jobs"][2]


def test_a_cut_never_joins_two_jobs() -> None:
    """A job shorter than the first makes the boundary search skip past its end, so the slice holds two jobs.
    If the first of them has its allocation on one line, the first closing line at that indentation is the
    second job's: cutting there would leave one valid, wrong job made of both."""
    d = json.loads(big_jobs(5))
    d["jobs"][0]["comment"] = "x" * 4000  # the first job, read exactly, sets how far the search skips
    data = json.dumps(d, indent=2).encode()
    key = b'"allocation": ['
    third = data.index(key, data.index(key, data.index(key) + 1) + 1)  # job 2's
    close = data.index(b"\n          ]", third)
    data = data[:third] + data[third:close].replace(b"\n", b" ") + data[close + 1:]
    jobs, _ = streamed(data, elide=("allocation",))
    assert [j["job_id"] for j in jobs] == [1000, 1001, 1002, 1003, 1004]
    assert allocations(jobs) == [True, True, True, False, True]  # jobs 1 and 2 were each shorter than any before
    for job, want in zip(jobs, json.loads(data)["jobs"], strict=True):
        want["job_resources"]["nodes"]["allocation"] = job["job_resources"]["nodes"]["allocation"]
        assert job == want
