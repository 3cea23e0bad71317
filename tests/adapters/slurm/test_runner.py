"""The command runner and the argv builders, with real processes (small scripts stand in for Slurm's
clients where a failure has to be produced on demand: an unreachable controller, a hang)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import stat
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.slurm.commands import SlurmCommands, drain_reason, event_of
from adapters.slurm.reader import SlurmReader
from adapters.slurm.runner import CommandRunner, is_transient, valid_job_id, valid_node, valid_signal, valid_watts
from gateway.config.models import SlurmSchedulerConfig
from gateway.exceptions import AdapterTimeout, AdapterUnavailable, CommandFailed

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "slurm-22.05" / "squeue.json"


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


class Delays:
    """Records the backoff the runner asks for instead of sleeping it (the runner's injected sleep)."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"  # a zombie nobody reaped has already been killed


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("job_id", ["1", "123", "123_4", "123+1", "123_4+0"])
def test_slurm_job_ids_are_accepted(job_id: str) -> None:
    assert valid_job_id(job_id) == job_id


@pytest.mark.parametrize("job_id", ["", "-1", "12 ", "1;rm -rf /", "--signal=KILL", "123_[1-3]", "abc", "1\n2"])
def test_anything_else_is_refused_as_a_job_id(job_id: str) -> None:
    with pytest.raises(CommandFailed, match="not a Slurm job id"):
        valid_job_id(job_id)


@pytest.mark.parametrize("node", ["", "-o", "a,b", "n[1-2]", "node 1", "n;reboot", "x" * 129])
def test_bad_node_names_are_refused(node: str) -> None:
    with pytest.raises(CommandFailed, match="not a node name"):
        valid_node(node)


def test_signals_come_from_the_allow_list() -> None:
    assert valid_signal("usr1") == "USR1" and valid_signal("SIGTERM") == "TERM"
    for bad in ("KILL", "STOP", "9", "USR1;ls"):
        with pytest.raises(CommandFailed, match="not allowed"):
            valid_signal(bad)


@pytest.mark.parametrize("watts", [math.nan, math.inf, -5.0, 0.0, True])
def test_watts_must_be_finite_and_positive(watts: float) -> None:
    with pytest.raises(CommandFailed, match="finite positive"):
        valid_watts(watts)


def test_transient_failures_are_told_from_refusals() -> None:
    assert is_transient(1, "squeue: error: slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    assert is_transient(1, "scontrol: error: Socket timed out on send/recv operation")
    assert is_transient(1, "Unexpected message received for job 1\n")
    assert not is_transient(1, "Invalid job id specified for job 99")
    assert not is_transient(0, "Unable to contact slurm controller")


# ----------------------------------------------------------------------------------- runs


async def test_arguments_reach_the_program_verbatim_never_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = await CommandRunner().run(["printf", "%s|", f"x; touch {marker}", "$(id)"])
    assert result.stdout == f"x; touch {marker}|$(id)|".encode()
    assert result.exit_code == 0 and not marker.exists()


async def test_a_refusal_carries_command_exit_code_and_stderr_and_is_not_retried(tmp_path: Path) -> None:
    count = tmp_path / "count"
    prog = script(tmp_path, "scontrol", f'echo x >> {count}\necho "Invalid job id specified for job $2" >&2\nexit 1\n')
    delays = Delays()
    with pytest.raises(CommandFailed) as err:
        await CommandRunner(retries=3, sleep=delays).run([prog, "release", "99"])
    assert err.value.exit_code == 1 and err.value.command == (prog, "release", "99")
    assert "Invalid job id specified for job 99" in err.value.stderr_tail and "release 99" in str(err.value)
    assert count.read_text().count("x") == 1 and delays.asked == []


async def test_an_unreachable_controller_is_retried_with_backoff_until_it_answers(tmp_path: Path) -> None:
    count = tmp_path / "count"
    prog = script(tmp_path, "squeue", f"""echo x >> {count}
if [ "$(wc -l < {count})" -le 2 ]; then
  echo "squeue: error: slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1
fi
echo ok
""")
    delays = Delays()
    result = await CommandRunner(retries=3, backoff_s=0.5, sleep=delays).run([prog])
    assert result.stdout == b"ok\n" and result.attempts == 3
    assert delays.asked == [0.5, 1.0]


async def test_still_unreachable_after_the_retries_is_adapter_unavailable(tmp_path: Path) -> None:
    prog = script(tmp_path, "scontrol", 'echo "slurm_update error: Socket timed out on send/recv operation" >&2\nexit 1\n')
    delays = Delays()
    with pytest.raises(AdapterUnavailable) as err:
        await CommandRunner(retries=2, backoff_s=0.25, sleep=delays).run([prog, "suspend", "7"])
    text = str(err.value)
    assert "cannot reach the Slurm controller" in text and "3 time(s)" in text and "Socket timed out" in text
    assert err.value.command == (prog, "suspend", "7") and delays.asked == [0.25, 0.5]


async def test_json_errors_without_data_mean_unreachable_even_with_exit_0(tmp_path: Path) -> None:
    """Slurm 22.05's squeue --json exits 0 when slurmctld is down; the answer is errors and no jobs."""
    doc = {"meta": {}, "errors": [{"description": "Failed while looking for jobs", "error_number": -1,
                                   "error": "Unspecified error", "source": "slurm_load_jobs"}], "jobs": []}
    out = tmp_path / "out.json"
    out.write_text(json.dumps(doc))
    with pytest.raises(AdapterUnavailable, match="Failed while looking for jobs"):
        await CommandRunner(retries=1, sleep=Delays()).run(["cat", str(out)], readonly=True)
    doc["jobs"] = [{"job_id": 1}]  # errors alongside data: the data is used, the parser logs the errors
    out.write_text(json.dumps(doc))
    assert (await CommandRunner().run(["cat", str(out)], readonly=True)).exit_code == 0


async def test_ok_if_accepts_slurms_words_for_already_done(tmp_path: Path) -> None:
    prog = script(tmp_path, "scontrol", 'echo "Job is not suspended for job 5" >&2\nexit 1\n')
    result = await CommandRunner().run([prog, "resume", "5"], ok_if=("Job is not suspended",))
    assert result.exit_code == 1


async def test_a_hung_command_times_out_and_its_whole_process_group_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prog = script(tmp_path, "srun", f"sleep 30 &\necho $! > {pids}\nwait\n")
    started = time.monotonic()
    with pytest.raises(AdapterTimeout) as err:
        await CommandRunner(timeout_s=0.5, retries=3).run([prog, "--overlap"])
    assert time.monotonic() - started < 3.0  # not retried: a hung command may have taken effect
    assert err.value.timeout_s == 0.5 and err.value.command == (prog, "--overlap")
    assert "timed out after 0.5 s" in str(err.value)
    child = int(pids.read_text())
    for _ in range(40):  # the kill is immediate; give the kernel a moment to reap
        if not alive(child):
            break
        await asyncio.sleep(0.05)
    assert not alive(child), "the background child of the timed-out command survived"


async def test_a_missing_program_is_unavailable_and_says_what_to_configure(tmp_path: Path) -> None:
    with pytest.raises(AdapterUnavailable, match=r"no such program .*\[scheduler\.slurm\]"):
        await CommandRunner().run([str(tmp_path / "nope"), "--json"])


async def test_dry_run_records_changes_without_running_them_but_still_reads(tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    runner = CommandRunner(dry_run=True)
    result = await runner.run(["touch", str(marker)])
    assert result.dry_run and not marker.exists() and runner.planned == [("touch", str(marker))]
    read = await runner.run(["echo", "state"], readonly=True)
    assert read.stdout == b"state\n" and not read.dry_run


@pytest.mark.parametrize("argv", [[], [""], ["echo", "a\x00b"]])
async def test_malformed_argv_is_refused(argv: list[str]) -> None:
    with pytest.raises(CommandFailed, match="refused before running"):
        await CommandRunner().run(argv)


def test_runner_env_is_laid_over_the_process_environment() -> None:
    runner = CommandRunner(env={"SLURM_CONF": "/x/slurm.conf"})
    assert runner._env is not None and runner._env["SLURM_CONF"] == "/x/slurm.conf"
    assert runner._env.get("PATH") == os.environ.get("PATH")


# ------------------------------------------------------------------------------ commands


def commands(**kw: object) -> SlurmCommands:
    return SlurmCommands(SlurmSchedulerConfig.model_validate(kw), min_cap_w=100.0, max_cap_w=400.0)


def test_each_lever_has_its_exact_command_line() -> None:
    c = commands(scontrol="/opt/slurm/bin/scontrol")
    assert c.squeue() == ["squeue", "--json", "--all"]
    assert c.signal("12_3", "usr1") == ["scancel", "--batch", "--signal=USR1", "12_3"]
    assert c.requeue_hold("12") == ["/opt/slurm/bin/scontrol", "requeuehold", "12"]
    assert c.suspend("12")[1:] == ["suspend", "12"] and c.resume("12")[1:] == ["resume", "12"]
    assert c.release("12")[1:] == ["release", "12"]
    assert c.drain(["gpu01", "gpu02"], "ev-7") == [
        "/opt/slurm/bin/scontrol", "update", "NodeName=gpu01,gpu02", "State=DRAIN", "Reason=dcflex ev-7"]
    assert c.undrain(["gpu01"])[2:] == ["NodeName=gpu01", "State=RESUME"]


def test_power_cap_template_is_filled_per_node_with_clamped_whole_watts() -> None:
    c = commands()
    assert c.power_cap("42", "gpu07", 251.6) == [
        "srun", "--overlap", "--jobid=42", "-w", "gpu07", "nvidia-smi", "-pl", "252"]
    assert c.power_cap("42", "gpu07", 20.0)[-1] == "100" and c.power_cap("42", "gpu07", 900.0)[-1] == "400"
    assert c.clamp(None) == 400.0
    # an array task's (or het component's) own numeric id: srun --jobid refuses Slurm's 123_4 notation
    assert c.power_cap("4_1", "gpu07", 300, slurm_id=7)[2] == "--jobid=7"
    custom = commands(power_cap_command=["/usr/local/sbin/gpucap", "--node={node}", "{watts}W"])
    assert custom.power_cap("1", "n1", 300) == ["/usr/local/sbin/gpucap", "--node=n1", "300W"]


def test_event_id_and_drain_reason_come_from_the_action_key() -> None:
    assert event_of("ev-1/hold_nodes/42") == "ev-1" and event_of("plain") == "plain"
    assert drain_reason("ev-1") == "dcflex ev-1"
    assert drain_reason("weird id; rm x") == "dcflex weird-id-rm-x" and drain_reason("///") == "dcflex"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("power_cap_command", [], "list of arguments"),
        ("power_cap_command", ["nvidia-smi", "-pl", "{power}"], "unknown placeholder"),
        ("power_cap_command", ["nvidia-smi", "-pl"], "must contain {watts}"),
        ("power_cap_command", ["{node}", "{watts}"], "first argument"),
        ("power_cap_command", ["x", "{watts"], "brace"),
        ("ack_marker_path", "acks/{job_id}", "absolute path"),
        ("ack_marker_path", "/acks/{job}", "must contain {job_id}"),
        ("retry_backoff_s", -1.0, "greater than or equal"),
    ],
)
def test_bad_slurm_settings_are_refused_with_a_reason(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SlurmSchedulerConfig.model_validate({field: value})


async def test_concurrent_reads_share_the_next_squeue_and_each_starts_after_its_caller(tmp_path: Path) -> None:
    """Levers re-read the queue before acting; at once they share reads, yet none gets a read older than its call."""
    script = tmp_path / "squeue"
    count = tmp_path / "count"
    script.write_text(f'#!/bin/sh\necho x >> {count}\nsleep 0.3\ncat {FIXTURE}\n')
    script.chmod(0o755)
    cmds = SlurmCommands(SlurmSchedulerConfig(squeue=str(script)), min_cap_w=100.0, max_cap_w=400.0)
    reader = SlurmReader(CommandRunner(timeout_s=10.0, retries=0), cmds)
    first = asyncio.create_task(reader.read_jobs())
    await asyncio.sleep(0.1)  # the first read is running: these share the next one
    rest = await asyncio.gather(*(reader.read_jobs() for _ in range(20)))
    assert (await first).keys() == rest[0].keys() and len(rest[0]) > 0
    assert reader.job_reads == 2 and len(count.read_text().split()) == 2

    script.write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
    results = await asyncio.gather(*(reader.read_jobs() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, CommandFailed) for r in results) and reader.job_reads == 3  # one error, shared


async def test_a_lever_reuses_a_recent_read_unless_the_adapter_acted_on_its_job_since(tmp_path: Path) -> None:
    script = tmp_path / "squeue"
    count = tmp_path / "count"
    script.write_text(f'#!/bin/sh\necho x >> {count}\ncat {FIXTURE}\n')
    script.chmod(0o755)
    cmds = SlurmCommands(SlurmSchedulerConfig(squeue=str(script)), min_cap_w=100.0, max_cap_w=400.0)
    reader = SlurmReader(CommandRunner(timeout_s=10.0, retries=0), cmds)
    assert (await reader.job("1")) is not None and reader.job_reads == 1
    assert (await reader.job("2")) is not None and (await reader.job("4_1")) is not None
    assert reader.job_reads == 1  # one read serves levers on jobs the adapter has not touched since
    reader.touched("2")
    assert (await reader.job("2")) is not None and reader.job_reads == 2  # its own command must show
    assert (await reader.job("1")) is not None and reader.job_reads == 2
    assert (await reader.job("no-such")) is None and reader.job_reads == 2
