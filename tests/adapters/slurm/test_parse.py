"""squeue/sinfo --json parsing against the captured 22.05 output and the constructed 23.11/24.05 documents."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.slurm.jsonstream import StreamedObject
from adapters.slurm.model import SlurmJob
from adapters.slurm.parse import parse_sinfo, parse_sinfo_result, parse_squeue, parse_squeue_result
from gateway.exceptions import AdapterError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOGGER = "dcflex.adapters.slurm"


def raw(version: str, name: str) -> bytes:
    return (FIXTURES / f"slurm-{version}" / name).read_bytes()


def doc(version: str, name: str = "squeue.json") -> dict[str, Any]:
    return dict(json.loads(raw(version, name)))


def by_id(jobs: list[SlurmJob]) -> dict[str, SlurmJob]:
    return {j.job_id: j for j in jobs}


# ------------------------------------------------------------------------------------ fixtures


def test_slurm_22_05_squeue() -> None:
    result = parse_squeue_result(raw("22.05", "squeue.json"))
    assert result.skipped == 0
    assert result.info.slurm_release == "22.05.8"
    assert result.info.plugin == "openapi/v0.0.38"
    jobs = by_id(list(result.items))
    summary = {j.job_id: (j.state, j.gpus, j.nodes) for j in result.items}
    assert summary == {
        "1": ("RUNNING", 2, ("vm",)),
        "2": ("SUSPENDED", 2, ("vm",)),
        "3": ("PENDING", 1, ()),
        "4_0": ("RUNNING", 1, ("vm",)),
        "5": ("COMPLETED", 0, ("vm",)),
        "4_1": ("RUNNING", 1, ("vm",)),
        "4_2": ("RUNNING", 1, ("vm",)),
        "8+0": ("PENDING", 0, ()),
        "8+1": ("PENDING", 1, ()),
        "10": ("PENDING", 4, ()),
    }
    train = jobs["1"]
    assert (train.name, train.user, train.partition, train.comment) == ("train-llm", "root", "batch", "dcflex:tier=flex-25")
    assert train.time_limit_s == 2880 * 60
    assert train.start_time == datetime.fromtimestamp(1795679377, UTC)
    assert train.end_time == datetime.fromtimestamp(1795852177, UTC)
    assert train.requeue is True and train.held is False
    assert jobs["2"].time_limit_s is None  # UNLIMITED is null in 22.05
    assert jobs["3"].held and jobs["3"].state_reason == "JobHeldUser"
    assert jobs["3"].start_time is None and jobs["3"].end_time is None  # 0 = unset
    assert (jobs["4_2"].array_job_id, jobs["4_2"].array_task_id) == (4, 2)
    assert (jobs["8+1"].het_job_id, jobs["8+1"].het_job_offset) == (8, 1)
    assert jobs["1"].array_job_id is None and jobs["1"].het_job_id is None


@pytest.mark.parametrize("version", ["23.11", "24.05"])
def test_data_parser_squeue(version: str) -> None:
    result = parse_squeue_result(raw(version, "squeue.json"))
    assert result.skipped == 0
    assert result.info.plugin == ("data_parser/v0.0.40" if version == "23.11" else "data_parser/v0.0.41")
    assert result.info.slurm_release.startswith(version)
    summary = {j.job_id: (j.state, j.state_flags, j.gpus, j.nodes) for j in result.items}
    expected = {
        "2001": ("RUNNING", (), 32, ("gpu001", "gpu002", "gpu003", "gpu004")),  # gres/gpu in tres_alloc_str
        "2002_[5-9]": ("PENDING", (), 1, ()),  # an array's pending rest, throttle "%2" dropped
        "2002_3": ("RUNNING", (), 1, ("gpu005",)),
        "2010+0": ("RUNNING", (), 2, ("gpu006",)),
        "2010+1": ("RUNNING", (), 0, ("cpu01", "cpu02")),
        "2020": ("SUSPENDED", (), 4, ("gpu007",)),  # only gres_detail says
        "2030": ("COMPLETED", ("COMPLETING",), 8, ("gpu008",)),
        "2040": ("PENDING", ("REQUEUE_HOLD",), 16, ()),  # tres_per_job
        "2050": ("PENDING", (), 4, ()),  # tres_per_task x 4 tasks
        "2060": ("RUNNING", (), 2, ("gpu009",)),
    }
    if version == "24.05":
        expected["2070"] = ("RUNNING", (), 12, ("hgx01", "hgx02"))  # two GPU types per node in gres_detail
    assert summary == expected
    jobs = by_id(list(result.items))
    assert jobs["2020"].time_limit_s is None  # {"infinite": true}
    assert jobs["2001"].time_limit_s == 2880 * 60
    assert jobs["2001"].start_time == datetime(2025, 5, 27, 12, 30, tzinfo=UTC)
    assert jobs["2040"].held and jobs["2040"].restart_count == 1
    assert jobs["2050"].held and jobs["2050"].restart_count == 0
    assert not jobs["2001"].held
    assert (jobs["2002_3"].array_job_id, jobs["2002_3"].array_task_id) == (2002, 3)
    assert jobs["2002_[5-9]"].array_task_id is None
    assert (jobs["2010+1"].het_job_id, jobs["2010+1"].het_job_offset) == (2010, 1)
    assert (jobs["2060"].user, jobs["2060"].account, jobs["2060"].qos) == ("bob", "inference", "high")


def test_slurm_22_05_sinfo() -> None:
    (node,) = parse_sinfo(raw("22.05", "sinfo.json"))
    assert (node.name, node.state, node.flags, node.gpus, node.partitions) == ("vm", "MIXED", (), 8, ("batch", "critical"))
    (drained,) = parse_sinfo(raw("22.05", "sinfo-draining.json"))
    assert (drained.state, drained.flags, drained.reason) == ("MIXED", ("DRAIN",), "dcflex test")


@pytest.mark.parametrize("version", ["23.11", "24.05"])
def test_data_parser_sinfo(version: str) -> None:
    result = parse_sinfo_result(raw(version, "sinfo.json"))
    assert result.skipped == 0
    nodes = {n.name: n for n in result.items}
    assert len(nodes) == len(result.items)  # nodes listed under two partitions are merged
    assert nodes["gpu001"].partitions == ("train", "sweep")
    assert nodes["gpu009"].partitions == ("train",)
    assert (nodes["gpu008"].state, nodes["gpu008"].flags) == ("ALLOCATED", ("COMPLETING",))
    assert (nodes["gpu009"].state, nodes["gpu009"].flags, nodes["gpu009"].reason) == ("MIXED", ("DRAIN",), "kernel update")
    assert nodes["gpu010"].reason.startswith("dcflex ev-42")
    assert (nodes["gpu012"].state, nodes["gpu012"].flags) == ("DOWN", ("DRAIN", "NOT_RESPONDING"))
    assert all(nodes[f"gpu{i:03d}"].gpus == 8 for i in range(1, 13))
    assert nodes["cpu01"].gpus == 0
    if version == "24.05":
        assert nodes["hgx01"].gpus == 6  # gpu:h100:2(S:0),gpu:h200:4(S:1)


# --------------------------------------------------------------------------------- input forms


def test_every_input_form_gives_the_same_jobs() -> None:
    data = raw("24.05", "squeue.json")
    expected = parse_squeue(data)
    assert parse_squeue(data.decode()) == expected
    assert parse_squeue(json.loads(data)) == expected
    assert parse_squeue(bytearray(data)) == expected
    assert parse_squeue(data[i:i + 997] for i in range(0, len(data), 997)) == expected  # chunks, e.g. a pipe


def test_windows_cut_anywhere_including_inside_utf8_and_numbers() -> None:
    d = doc("22.05")
    d["jobs"][0]["name"] = "entraînement-🚀"
    d["jobs"][0]["job_id"] = 123456789
    data = json.dumps(d, ensure_ascii=False).encode()
    for size in (1, 2, 3, 7, 64):
        stream = StreamedObject((data[i:i + size] for i in range(0, len(data), size)), ["jobs"], chunk_bytes=size)
        items = [obj for _, _, obj in stream.items() if isinstance(obj, dict)]
        assert len(items) == 10 and items[0]["job_id"] == 123456789
        assert items[0]["name"] == "entraînement-🚀"
        assert stream.header["meta"] == d["meta"]
    assert parse_squeue(data[i:i + 5] for i in range(0, len(data), 5))[0].name == "entraînement-🚀"


def test_keys_in_any_order_and_unknown_fields_ignored() -> None:
    d = doc("22.05")
    d["jobs"][0]["a_field_from_the_future"] = {"nested": [1, 2, {"x": None}]}
    reordered = {"jobs": d["jobs"], "brand_new_top_level": [1], "errors": [], "meta": d["meta"]}
    jobs = parse_squeue(json.dumps(reordered).encode())
    assert len(jobs) == 10 and jobs[0].job_id == "1"


def test_22_05_jobs_with_later_field_shapes_still_parse() -> None:
    d = doc("22.05")
    j = d["jobs"][0]
    j["time_limit"] = {"set": True, "infinite": False, "number": 30}
    j["start_time"] = {"set": True, "infinite": False, "number": 1795679377}
    j["job_state"] = ["RUNNING"]
    (job, *_) = parse_squeue(d)
    assert job.time_limit_s == 1800 and job.start_time == datetime.fromtimestamp(1795679377, UTC)
    assert job.state == "RUNNING"


def counter(number: object, *, set_: bool = True, infinite: bool = False) -> dict[str, object]:
    return {"set": set_, "infinite": infinite, "number": number}


@pytest.mark.parametrize(
    ("overrides", "attribute", "expected"),
    [
        ({"time_limit": counter(30)}, "time_limit_s", 1800.0),
        ({"time_limit": counter(30.0)}, "time_limit_s", 1800.0),
        ({"time_limit": 30.0}, "time_limit_s", 1800.0),
        ({"time_limit": counter(0, set_=False)}, "time_limit_s", None),
        ({"time_limit": counter(0, infinite=True)}, "time_limit_s", None),
        ({"time_limit": counter(0xFFFFFFFE)}, "time_limit_s", None),  # NO_VAL
        ({"time_limit": 0xFFFFFFFF}, "time_limit_s", None),  # INFINITE
        ({"time_limit": None}, "time_limit_s", None),
        ({"restart_cnt": counter(2)}, "restart_count", 2),
        ({"restart_cnt": None}, "restart_count", 0),
        ({"hold": 1}, "held", True),
        ({"hold": True}, "held", True),
        ({"requeue": 0}, "requeue", False),
        ({"start_time": counter(0)}, "start_time", None),
        ({"start_time": -5}, "start_time", None),
        ({"start_time": counter(1795679377)}, "start_time", datetime.fromtimestamp(1795679377, UTC)),
        ({"end_time": 10**15}, "end_time", None),  # past datetime's range: "never"
        ({"array_job_id": counter(77), "array_task_id": counter(3)}, "job_id", "77_3"),
        ({"array_job_id": counter(77), "array_task_id": counter(0, set_=False), "array_task_string": "5-9%2"},
         "job_id", "77_[5-9]"),
        ({"het_job_id": counter(9), "het_job_offset": counter(1)}, "job_id", "9+1"),
        ({"het_job_id": None, "array_job_id": None}, "job_id", "1"),
        ({"job_state": ["RUNNING", "CONFIGURING"]}, "state_flags", ("CONFIGURING",)),
        ({"job_state": ["PENDING"], "state_reason": "JobHeldAdmin"}, "held", True),
        ({"user_name": "", "user_id": 1001}, "user", "1001"),
        ({"nodes": "", "job_resources": {"nodes": {"list": "gpu[1-2]", "allocation": []}}}, "nodes", ("gpu1", "gpu2")),
        ({"gres_detail": [], "tres_alloc_str": "cpu=4", "node_count": counter(3)}, "gpus", 6),  # gres:gpu:2 per node
    ],
)
def test_every_field_shape_reads_the_same(overrides: dict[str, Any], attribute: str, expected: object) -> None:
    """Slurm 22.05's plain values and 23.x+'s counter objects (and a few odd shapes) in a 22.05 record."""
    d = doc("22.05")
    d["jobs"] = [dict(d["jobs"][0], **overrides)]
    for data in (d, json.dumps(d).encode()):
        (job,) = parse_squeue(data)
        assert getattr(job, attribute) == expected


def test_each_job_keeps_its_numeric_id_for_srun() -> None:
    jobs = by_id(parse_squeue(raw("22.05", "squeue.json")))
    assert [(k, jobs[k].slurm_id) for k in ("1", "4_0", "4_1", "4_2", "8+0", "8+1")] == [
        ("1", 1), ("4_0", 6), ("4_1", 7), ("4_2", 4), ("8+0", 8), ("8+1", 9)]


def test_jobs_of_one_document_share_equal_times() -> None:
    jobs = by_id(parse_squeue(raw("22.05", "squeue.json")))
    array = [jobs[k] for k in ("4_0", "4_1", "4_2")]
    assert array[0].submit_time is not None
    assert all(j.submit_time is array[0].submit_time for j in array)  # one object, not three equal ones
    assert jobs["1"].start_time is jobs["2"].start_time == datetime.fromtimestamp(1795679377, UTC)


def test_job_records_are_complete_slurm_jobs() -> None:
    """``SlurmJob`` is built slot by slot (no ``__init__``): every field is set, and there is no check skipped."""
    assert "__post_init__" not in vars(SlurmJob)
    for version in ("22.05", "23.11", "24.05"):
        for job in parse_squeue(raw(version, "squeue.json")):
            assert dataclasses.replace(job) == job  # reads every field back into __init__
            assert hash(job) == hash(dataclasses.replace(job))


@pytest.mark.parametrize(
    ("job_state", "state", "flags"),
    [
        ("REQUEUE_HOLD", "PENDING", ("REQUEUE_HOLD",)),  # 22.05 prints only the flag
        ("CONFIGURING", "RUNNING", ("CONFIGURING",)),
        ("COMPLETING", "COMPLETING", ("COMPLETING",)),
        ("TIMEOUT", "TIMEOUT", ()),
        ("SOMETHING_NEW", "SOMETHING_NEW", ()),
        (["PENDING", "REQUEUED"], "PENDING", ("REQUEUED",)),
        (["COMPLETING"], "COMPLETING", ("COMPLETING",)),
    ],
)
def test_job_state_names_and_flags(job_state: object, state: str, flags: tuple[str, ...]) -> None:
    d = doc("22.05")
    d["jobs"] = [dict(d["jobs"][0], job_state=job_state)]
    (job,) = parse_squeue(d)
    assert (job.state, job.state_flags) == (state, flags)
    assert job.held is (state == "PENDING" and "REQUEUE_HOLD" in flags)


def test_gpu_sources_in_order() -> None:
    base = dict(doc("22.05")["jobs"][0], tres_alloc_str="", gres_detail=[], tres_per_node="", node_count=3,
                tasks=5, tres_req_str="cpu=1")
    cases: list[tuple[dict[str, Any], int]] = [
        ({"tres_alloc_str": "cpu=8,gres/gpu=6,gres/gpu:a100=6", "gres_detail": ["gpu:9"]}, 6),
        ({"tres_alloc_str": "cpu=8,gres/gpu:a100=2,gres/gpu:v100=1"}, 3),  # typed only: summed
        ({"gres_detail": ["gpu:a100:2(IDX:0-1)", "gpu:2(IDX:0,3)"], "tres_per_node": "gres:gpu:8"}, 4),
        ({"tres_per_job": "gres/gpu:7", "tres_per_node": "gres/gpu:1"}, 7),
        ({"tres_per_node": "gres:gpu:a100:2"}, 6),  # x 3 nodes
        ({"tres_per_node": "gpu:1,gres:nic:1"}, 3),
        ({"tres_per_task": "gres/gpu:1"}, 5),  # x 5 tasks
        ({"tres_per_socket": "gres/gpu:1", "sockets_per_node": 2}, 6),
        ({"tres_req_str": "cpu=4,gres/gpu=2"}, 2),
        ({}, 0),
    ]
    for overrides, gpus in cases:
        (job,) = parse_squeue({"jobs": [dict(base, **overrides)]})
        assert job.gpus == gpus, overrides


# --------------------------------------------------------------------------- malformed documents


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty output"),
        (b"   \n", "empty document"),
        (b"squeue: error: Unable to contact slurm controller", "not a JSON object (it starts with 'squeue: error"),
        (b"[]", "not a JSON object"),
        (b'{"meta": {}, "errors": []}', "no list of jobs at $.jobs"),
        (b'{"jobs": {"1": {}}}', "expected a list at $.jobs"),
        (b'{"jobs": [{"job_id": 1, "job_state": "RUNNING"}', "at $.jobs"),  # truncated
        (b'{"jobs": []} {"jobs": []}', "extra data"),
        (b'{"jobs": [], "errors": [{"error": "Unable to contact slurm controller (connect failure)", "error_number": 1007}]}',
         "Unable to contact slurm controller"),
        (b'{"jobs": [{"job_id": 1,, }]}', "$.jobs[0]"),
        (b'\xff{"jobs": []}', "invalid UTF-8"),
    ],
)
def test_malformed_documents_raise_adapter_error(data: bytes, message: str) -> None:
    with pytest.raises(AdapterError) as err:
        parse_squeue(data)
    assert message in str(err.value)
    assert str(err.value).startswith("squeue --json: ")
    assert err.value.adapter == "slurm"


def test_mapping_with_jobs_not_a_list() -> None:
    with pytest.raises(AdapterError, match=r"expected a list at \$\.jobs"):
        parse_squeue({"jobs": "none"})


def test_slurm_errors_next_to_data_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    d = doc("22.05")
    d["errors"] = [{"description": "partial answer", "error_number": 9}]
    d["warnings"] = [{"description": "slow controller"}]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert len(parse_squeue(d)) == 10
    assert "partial answer (error 9)" in caplog.text and "slow controller" in caplog.text


def test_sinfo_without_nodes_raises() -> None:
    with pytest.raises(AdapterError, match=r"sinfo --json: no list of nodes/sinfo at \$\.nodes or \$\.sinfo"):
        parse_sinfo(b'{"meta": {}, "errors": []}')


# ------------------------------------------------------------------------------ malformed fields


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("job_id", None, "$.jobs[1].job_id"),
        ("job_id", "12", "$.jobs[1].job_id"),
        ("job_state", 3, "$.jobs[1].job_state"),
        ("job_state", [], "$.jobs[1].job_state"),
        ("time_limit", "1:00:00", "$.jobs[1].time_limit"),
        ("time_limit", {"set": True, "infinite": False, "number": "60"}, "$.jobs[1].time_limit.number"),
        ("start_time", [1], "$.jobs[1].start_time"),
        ("name", 42, "$.jobs[1].name"),
        ("nodes", "vm[1-", "$.jobs[1].nodes"),
        ("requeue", "yes", "$.jobs[1].requeue"),
        ("gres_detail", "gpu:2", "$.jobs[1].gres_detail"),
        ("tres_alloc_str", "cpu=1,gres/gpu=lots", "$.jobs[1].tres_alloc_str"),
        ("het_job_id", {"set": True, "number": None}, "$.jobs[1].het_job_id.number"),
    ],
)
def test_one_bad_job_is_skipped_with_its_path(field: str, value: object, path: str, caplog: pytest.LogCaptureFixture) -> None:
    d = doc("22.05")
    d["jobs"][1][field] = value
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = parse_squeue_result(d)
    assert result.skipped == 1
    assert [j.job_id for j in result.items] == ["1", "3", "4_0", "5", "4_1", "4_2", "8+0", "8+1", "10"]
    assert result.problems[0].startswith(path + ": ")
    assert path in caplog.text


def test_a_job_that_is_not_an_object_is_skipped() -> None:
    d = doc("22.05")
    d["jobs"].insert(0, "job 1")
    result = parse_squeue_result(json.dumps(d))
    assert result.skipped == 1 and result.problems[0].startswith("$.jobs[0]: expected an object, got str")
    assert len(result.items) == 10


def test_many_bad_jobs_are_counted_but_not_each_logged(caplog: pytest.LogCaptureFixture) -> None:
    d = doc("22.05")
    bad = dict(d["jobs"][0], job_state=None)
    d["jobs"] = [copy.deepcopy(bad) for _ in range(50)] + d["jobs"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = parse_squeue_result(d)
    assert result.skipped == 50 and len(result.items) == 10
    assert len(caplog.records) == 21  # 20 individually, then one summary
    assert "not logging each" in caplog.records[-1].getMessage()


def test_bad_node_entries_are_skipped() -> None:
    d = doc("22.05", "sinfo.json")
    good = d["nodes"][0]
    d["nodes"] = [dict(good, name=""), dict(good, name="x", state=7), dict(good, name="y", gres="gpu:a100:many"), "n", good]
    result = parse_sinfo_result(d)
    assert [n.name for n in result.items] == ["vm"]
    assert result.skipped == 4
    assert [p.split(":")[0] for p in result.problems] == ["$.nodes[0].name", "$.nodes[1].state", "$.nodes[2].gres", "$.nodes[3]"]


def test_bad_sinfo_entry_is_skipped() -> None:
    d = doc("23.11", "sinfo.json")
    d["sinfo"][1]["nodes"]["nodes"] = ["gpu[005-"]
    result = parse_sinfo_result(d)
    assert result.skipped == 1 and result.problems[0].startswith("$.sinfo[1].nodes.nodes: ")
    names = {n.name for n in result.items}
    assert "gpu001" in names and "gpu012" in names
    assert {n.name for n in result.items if n.partitions == ("sweep",)} == {"gpu005", "gpu006", "gpu007"}
