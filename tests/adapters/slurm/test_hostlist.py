"""Hostlist expansion: Slurm's compressed node sets, as squeue/sinfo print them."""

from __future__ import annotations

import pytest

from adapters.slurm.hostlist import MAX_HOSTS, expand_hostlist


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("", ()),
        ("vm", ("vm",)),
        ("a,b , c", ("a", "b", "c")),
        ("gpu[001-004,007],cpu1", ("gpu001", "gpu002", "gpu003", "gpu004", "gpu007", "cpu1")),
        ("n[8-10]", ("n8", "n9", "n10")),  # no padding: the lower bound has none
        ("n[09-11]", ("n09", "n10", "n11")),  # padded to the lower bound's width
        ("n[3]", ("n3",)),
        ("rack[1-2]-node[01-02]", ("rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02")),
        ("gpu[1-2].cluster", ("gpu1.cluster", "gpu2.cluster")),
        ("a[1-2],a[1-2]", ("a1", "a2", "a1", "a2")),  # duplicates kept, order kept
        (" gpu[1-2] , gpu[ 4 ] ", ("gpu1", "gpu2", "gpu4")),  # blanks around names and ranges
    ],
)
def test_expands(expr: str, expected: tuple[str, ...]) -> None:
    assert expand_hostlist(expr) == expected


def test_large_range_is_expanded_in_order() -> None:
    hosts = expand_hostlist("gpu[0001-2048]")
    assert len(hosts) == 2048
    assert hosts[0] == "gpu0001" and hosts[-1] == "gpu2048"


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("gpu[1-", "unclosed"),
        ("gpu1]", "unbalanced"),
        ("gpu[a-b]", "bad range"),
        ("gpu[5-3]", "backwards"),
        ("gpu[[1]]", "nested"),
        ("gpu[1-2", "unclosed"),
        ("gpu[]", "bad range"),
        ("gpu[1,,2]", "bad range"),
    ],
)
def test_rejects_malformed(expr: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        expand_hostlist(expr)


def test_refuses_to_exhaust_memory() -> None:
    with pytest.raises(ValueError, match=f"more than {MAX_HOSTS}"):
        expand_hostlist("n[0-999999999]")
    with pytest.raises(ValueError, match=f"more than {MAX_HOSTS}"):
        expand_hostlist("r[0-9999]n[0-9999]")  # each range small, the product not
