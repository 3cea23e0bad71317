"""Scenario files: the shipped ones load, and a malformed one is refused with every problem named by its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.exceptions import ScenarioError
from simulators.replay.jobs import job_stream, read_trace
from simulators.replay.scenario import load_scenario, parse_scenario, shipped

GOOD = """
[scenario]
name = "tiny"
seed = 3
start = 2026-07-01T12:00:00+00:00
hours = 3

[site]
nodes = 4
gpus_per_node = 8

[jobs.generator]
fill = 0.75

[[events]]
start = 2026-07-01T13:00:00+00:00
duration_min = 60
values = [20.0]
notice_min = 30
"""


def problems(text: str, tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "test.toml", tmp_path)
    assert str(err.value).startswith("invalid scenario test.toml")
    return dict(err.value.problems)


def test_every_shipped_scenario_loads_with_its_jobs_and_events() -> None:
    names = set(shipped())
    assert {"phoenix-2025", "ercot-emergency", "price-day", "year-10k"} <= names
    for name in names:
        scn = load_scenario(name)
        assert scn.name == name and scn.events(), name
        assert len(job_stream(scn)) > 0, name


def test_the_phoenix_scenario_is_the_field_demonstration() -> None:
    scn = load_scenario("phoenix-2025")
    stream = job_stream(scn)
    assert sorted(s.gpus for s in stream.initial) == [32, 32, 48, 48, 48, 48]
    assert scn.spec.site.gpus == 256
    (ev,) = scn.events()
    assert ev.start.strftime("%H:%M") == "16:10" and ev.end.strftime("%H:%M") == "19:30"
    assert ev.values == (25.0,) and ev.type == "x-loadControlPercentOffset"
    assert scn.gateway.policy.default_ramp_s == 900  # the first 15 minutes are the ramp
    assert scn.spec.start.strftime("%H:%M") == "14:40" and scn.spec.end.strftime("%H:%M") == "21:20"
    assert round(sum(stream.weights.values()), 6) == 1.0  # the file's weights


def test_a_good_scenario_parses_and_fills_its_site(tmp_path: Path) -> None:
    scn = parse_scenario(GOOD, "test.toml", tmp_path)
    stream = job_stream(scn)
    assert 0.7 * 32 <= sum(s.gpus for s in stream.initial) <= 32
    assert [e.id for e in scn.events()] == ["tiny-0001"]
    assert scn.gateway.site.nodes == 4  # [site] reaches the gateway's own configuration


@pytest.mark.parametrize(("edit", "path", "words"), [
    (lambda t: t.replace('name = "tiny"\n', ""), "scenario.name", "Field required"),
    (lambda t: t.replace("hours = 3", "hours = -1"), "scenario.hours", "greater than 0"),
    (lambda t: t.replace("nodes = 4", 'nodes = "four"'), "site.nodes", "valid integer"),
    (lambda t: t.replace("values = [20.0]", "values = []"), "events[0].values", "at least 1"),
    (lambda t: t.replace('values = [20.0]', 'values = [20.0]\ntype = "price"'), "events[0]", "dcflex maps LOAD_CONTROL of type"),
    (lambda t: t.replace('values = [20.0]', 'values = [20.0]\ntype = "x-loadControlLevelOffset"'), "events[0]",
     "unsupported signal 'LOAD_CONTROL' (type 'x-loadControlLevelOffset')"),  # the gateway does not follow it
    (lambda t: t.replace("gpus_per_node = 8", "gpus_per_node = 0"), "site.gpus_per_node", "greater than or equal to 1"),
    (lambda t: t.replace("duration_min = 60", "duration_min = 600"), "(top level)", "not inside the horizon"),
    (lambda t: t.replace("seed = 3", 'seed = 3\nstrategies = ["dcflex", "magic"]'), "scenario.strategies", "magic"),
    (lambda t: t.replace("fill = 0.75", "fill = 0.75\nsizes = {8 = 1}\nduration_h = [9, 2]"),
     "jobs.generator.duration_h", "above the high end"),
    (lambda t: t.replace("[jobs.generator]\nfill = 0.75", "[jobs]"), "jobs", "exactly one of trace"),
    (lambda t: t + "\n[gateway.policy]\ntolerance_kw = -3\n", "gateway.policy.tolerance_kw", "greater than or equal"),
    (lambda t: t + "\n[gateway.policy]\ntolerence_kw = 3\n", "gateway.policy.tolerence_kw", "unknown key"),
    (lambda t: t.replace("start = 2026-07-01T13:00:00+00:00", 'start = "soon"'), "events[0].start", "datetime"),
])
def test_a_malformed_scenario_names_the_field(tmp_path: Path, edit: object, path: str, words: str) -> None:
    found = problems(edit(GOOD), tmp_path)  # type: ignore[operator]
    assert path in found, found
    assert words in found[path], found[path]


def test_scenarios_take_every_signal_the_gateway_follows_and_no_other(tmp_path: Path) -> None:
    from gateway.policy.signals import SUPPORTED_TYPES
    for kind, types in SUPPORTED_TYPES.items():
        for stype in types:
            value = "1.0" if kind.value == "SIMPLE" else "20.0"
            text = GOOD.replace("values = [20.0]", f'values = [{value}]\nsignal = "{kind.value}"\ntype = "{stype}"')
            scn = parse_scenario(text, "test.toml", tmp_path)
            assert [(e.signal, e.type) for e in scn.spec.events] == [(kind.value, stype)]


def test_a_scenarios_site_is_the_gateways_site_model(tmp_path: Path) -> None:
    text = GOOD.replace("nodes = 4", "nodes = 4\nmin_cap_w = 150.0\nmax_cap_w = 350.0")
    scn = parse_scenario(text, "test.toml", tmp_path)
    assert (scn.gateway.site.min_cap_w, scn.gateway.site.max_cap_w) == (150.0, 350.0)
    found = problems(GOOD.replace("nodes = 4", "nodes = 4\nmin_cap_w = 400.0"), tmp_path)
    assert "min_cap_w must be below max_cap_w" in found["site"], found  # the gateway's own rule


def test_not_toml_and_a_missing_trace_are_reported(tmp_path: Path) -> None:
    assert "(syntax)" in problems("[scenario\nname=", tmp_path)
    text = GOOD.replace("[jobs.generator]\nfill = 0.75", '[jobs]\ntrace = "nowhere.csv"')
    assert "no such file" in problems(text, tmp_path)["jobs.trace"]


def test_a_bad_trace_lists_every_bad_cell_with_its_row(tmp_path: Path) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text(
        "job_id,submit_min,gpus,tier,workload,work_h\n"
        "a,0,8,flex-25,average,2\n"
        "b,0,eight,flex-25,average,2\n"
        "c,0,8,flexible,average,2\n"
        "a,5,8,flex-25,average,2\n"
        "d,0,8,flex-25,average,\n"
    )
    with pytest.raises(ScenarioError) as err:
        read_trace(csv, site_gpus=64)
    found = dict(err.value.problems)
    assert "gpus" in found["row 3"] and "tier" in found["row 4"] and "duplicate" in found["row 5.job_id"]
    assert "work_h: required" in found["row 6"]
    csv.write_text("job_id,gpus\nx,8\n")
    with pytest.raises(ScenarioError, match="missing column"):
        read_trace(csv, site_gpus=64)
