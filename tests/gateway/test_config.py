"""Configuration loading: the example files, every kind of mistake, and secrets from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.config import DcflexConfig, load_config, load_config_text
from gateway.domain import Tier
from gateway.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "configs").glob("*.toml"))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader reads DCFLEX_* variables; tests must not see the developer's."""
    for name in list(os.environ):
        if name.upper().startswith("DCFLEX_"):
            monkeypatch.delenv(name)


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "site.toml")
    assert info.value.source == "site.toml"
    return dict(info.value.problems)


def _key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key of the configuration, as ``section.key`` (tier rules as ``tiers.rules.<key>``)."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sub = field.annotation
        args = getattr(sub, "__args__", ())
        inner = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            paths += _key_paths(sub, path + ".")
        elif inner is not None:
            paths += _key_paths(inner, path + ".")
        else:
            paths.append(path)
    return paths


class TestExamples:
    def test_the_three_examples_exist(self) -> None:
        assert [p.name for p in EXAMPLES] == ["demo.toml", "ray-site.toml", "slurm-site.toml"]

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
    def test_example_loads(self, path: Path) -> None:
        cfg = load_config(path)
        assert isinstance(cfg, DcflexConfig)
        assert cfg.tiers.rules, "every example shows tier rules"

    def test_demo_is_the_simulated_64_by_8_cluster_with_default_policy(self) -> None:
        cfg = load_config(ROOT / "configs" / "demo.toml")
        assert cfg.scheduler.kind == "simulated"
        assert (cfg.site.nodes, cfg.site.gpus_per_node) == (64, 8)
        assert cfg.policy == DcflexConfig().policy

    def test_slurm_site_classifies_by_qos_partition_and_account(self) -> None:
        cfg = load_config(str(ROOT / "configs" / "slurm-site.toml"))
        assert cfg.scheduler.kind == "slurm"
        assert {r.tier for r in cfg.tiers.rules if r.qos} == {Tier.PREEMPTIBLE, Tier.FLEX_10}
        assert any(r.partition for r in cfg.tiers.rules) and any(r.account for r in cfg.tiers.rules)

    def test_ray_site_classifies_by_label(self) -> None:
        cfg = load_config(ROOT / "configs" / "ray-site.toml")
        assert cfg.scheduler.kind == "ray"
        assert sum(1 for r in cfg.tiers.rules if r.label) >= 4

    @pytest.mark.parametrize("key", _key_paths(DcflexConfig))
    def test_demo_and_docs_mention_every_key(self, key: str) -> None:
        """An operator copies from these: a key added to the models must be added to both."""
        name = key.rsplit(".", 1)[-1]
        demo = (ROOT / "configs" / "demo.toml").read_text()
        forms = (f"\n{name} =", f"# {name} =", f"# {name}:", f"[{key}]")
        assert any(f in demo for f in forms), f"{key} missing from demo.toml"
        docs = (ROOT / "docs" / "configuration.md").read_text()
        assert f"`{key}`" in docs or f"`{name}`" in docs, f"{key} missing from docs/configuration.md"


class TestValid:
    @pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
    def test_empty_file_is_the_default_configuration(self, text: str) -> None:
        assert load_config_text(text) == DcflexConfig()

    def test_a_partial_section_keeps_the_other_defaults(self) -> None:
        cfg = load_config_text("[site]\nnodes = 3\n")
        assert cfg.site.nodes == 3 and cfg.site.gpus_per_node == 8

    def test_result_is_the_public_class(self) -> None:
        cfg = load_config_text("[site]\nnodes = 3")
        assert type(cfg) is DcflexConfig and repr(cfg).startswith("DcflexConfig(")
        assert cfg == DcflexConfig(site={"nodes": 3})  # type: ignore[arg-type]
        assert cfg != DcflexConfig()

    def test_trailing_slash_of_vtn_url_is_dropped(self) -> None:
        assert load_config_text('[ven]\nvtn_url = "https://vtn.example/OpenADR2/Simple/2.0b/"').ven.vtn_url.endswith("2.0b")


class TestMistakes:
    def test_malformed_toml(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config_text("[site\nnodes = 3", "broken.toml")
        ((path, msg),) = info.value.problems
        assert path == "(syntax)" and msg.startswith("not valid TOML:")
        assert str(info.value).startswith("invalid configuration in broken.toml (1 problem(s)):")

    def test_unknown_key_at_top_level(self) -> None:
        assert _problems("[sitez]\nnodes = 3") == {
            "sitez": "unknown key (check its spelling and section; see configs/ for every allowed key)"
        }

    def test_unknown_nested_keys_name_their_path(self) -> None:
        problems = _problems('[site]\nnodez = 3\n[sinks.mqtt]\nhots = "x"\n[[tiers.rules]]\ntier = "flex-10"\nqoss = "low"')
        assert set(problems) == {"site.nodez", "sinks.mqtt.hots", "tiers.rules[0].qoss"}
        assert all(m.startswith("unknown key") for m in problems.values())

    def test_wrong_types(self) -> None:
        problems = _problems('[site]\nnodes = "many"\n[scheduler]\ndry_run = "perhaps"\n[policy]\nsimple_levels = 3')
        assert problems["site.nodes"] == "Input should be a valid integer, unable to parse string as an integer; got 'many'"
        assert problems["scheduler.dry_run"].startswith("Input should be a valid boolean")
        assert problems["policy.simple_levels"] == "Input should be a valid dictionary; got 3"

    @pytest.mark.parametrize(("text", "path", "fragment"), [
        ("[site]\nmax_shed_fraction = 1.5", "site.max_shed_fraction", "less than or equal to 1; got 1.5"),
        ("[sinks.mqtt]\nport = 70000", "sinks.mqtt.port", "less than or equal to 65535; got 70000"),
        ("[ven]\npoll_interval_s = 0", "ven.poll_interval_s", "greater than 0; got 0"),
        ("[site]\ngpu_idle_w = nan", "site.gpu_idle_w", "finite number"),
        ("[policy]\nmax_target_factor = 1.0", "policy.max_target_factor", "greater than 1"),
        ("[scheduler]\nretries = 11", "scheduler.retries", "less than or equal to 10; got 11"),
        ('[policy.simple_levels]\n"1" = 1.2', "policy.simple_levels.1", "less than or equal to 1; got 1.2"),
        ('[site]\nsite_id = "has space"', "site.site_id", "should match pattern"),
    ])
    def test_out_of_range(self, text: str, path: str, fragment: str) -> None:
        problems = _problems(text)
        assert list(problems) == [path]
        assert fragment in problems[path]

    def test_rules_spanning_several_fields(self) -> None:
        assert _problems("[site]\nmin_cap_w = 400\nmax_cap_w = 300") == {"site": "min_cap_w must be below max_cap_w"}
        assert _problems('[ven]\ncert = "ven.crt"') == {"ven": "cert and key go together: set both or neither"}
        assert _problems('[ven]\nvtn_url = "ftp://vtn"') == {"ven.vtn_url": "must start with http:// or https://; got 'ftp://vtn'"}
        problems = _problems('[policy.simple_levels]\n"5" = 0.1')
        assert problems == {"policy.simple_levels": "level '5' is not a SIMPLE level (allowed: 0, 1, 2, 3)"}

    def test_bad_tier_lists_the_tiers_once(self) -> None:
        problems = _problems('[tiers]\ndefault = "gold"\n[[tiers.rules]]\ntier = "silver"\nqos = "low"')
        allowed = "'critical', 'flex-10', 'flex-25', 'flex-50' or 'preemptible'"
        assert problems == {
            "tiers.default": f"Input should be {allowed}; got 'gold'",
            "tiers.rules[0].tier": f"Input should be {allowed}; got 'silver'",
        }

    def test_bad_scheduler_kind_lists_the_kinds_once(self) -> None:
        msg = _problems('[scheduler]\nkind = "pbs"')["scheduler.kind"]
        assert msg == "Input should be 'simulated', 'slurm' or 'ray'; got 'pbs'"
        assert msg.count("'slurm'") == 1

    def test_a_tier_rule_needs_its_tier(self) -> None:
        assert _problems('[[tiers.rules]]\nqos = "low"') == {"tiers.rules[0].tier": "Field required"}

    def test_several_problems_reported_at_once(self) -> None:
        text = '[site]\nnodes = 0\nnodez = 1\n[scheduler]\nkind = "pbs"\n[api]\nport = -1\n[extra]\nx = 1'
        with pytest.raises(ConfigError) as info:
            load_config_text(text, "many.toml")
        paths = [p for p, _ in info.value.problems]
        assert sorted(paths) == ["api.port", "extra", "scheduler.kind", "site.nodes", "site.nodez"]
        message = str(info.value)
        assert message.startswith("invalid configuration in many.toml (5 problem(s)):\n")
        assert all(f"\n  {p}: " in message for p in paths)

    @pytest.mark.parametrize("api", ["port = 0", "enabled = false"])
    def test_ray_jobs_need_an_address_for_the_gateway(self, api: str) -> None:
        problems = _problems(f'[scheduler]\nkind = "ray"\n[api]\n{api}\n')
        assert "set scheduler.ray.gateway_url, or give [api] a fixed port" in problems["(top level)"]
        fine = f'[scheduler]\nkind = "ray"\n[scheduler.ray]\ngateway_url = "http://gw:8765"\n[api]\n{api}\n'
        assert load_config_text(fine, "site.toml").scheduler.ray.gateway_url == "http://gw:8765"

    def test_a_serve_rule_needs_a_deployment_and_a_tier(self) -> None:
        problems = _problems('[[scheduler.ray.serve]]\ntier = "flex-50"\nmin_replicas = 0\n')
        assert set(problems) == {"scheduler.ray.serve[0].deployment", "scheduler.ray.serve[0].min_replicas"}


class TestEnvironment:
    def test_secret_from_the_environment_overrides_the_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DCFLEX_SINKS__MQTT__PASSWORD", "s3cret-from-env")
        cfg = load_config_text('[sinks.mqtt]\nhost = "broker"\npassword = "from-file"')
        assert cfg.sinks.mqtt.password is not None
        assert cfg.sinks.mqtt.password.get_secret_value() == "s3cret-from-env"
        assert cfg.sinks.mqtt.host == "broker"  # the rest of the section still comes from the file

    def test_secret_is_never_printed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DCFLEX_SINKS__MQTT__PASSWORD", "s3cret-from-env")
        monkeypatch.setenv("DCFLEX_SINKS__INFLUXDB__TOKEN", "t0ken-from-env")
        cfg = load_config_text("")
        for text in (repr(cfg), str(cfg), repr(cfg.sinks), cfg.model_dump_json()):
            assert "s3cret-from-env" not in text and "t0ken-from-env" not in text
        assert "**********" in repr(cfg.sinks.mqtt)

    def test_invalid_secret_is_not_echoed_in_the_error(self) -> None:
        problems = _problems("[sinks.influxdb]\ntoken = 123456789\n[ven]\npassphrase = 987654321")
        assert problems == {"sinks.influxdb.token": "Input should be a valid string",
                            "ven.passphrase": "Input should be a valid string"}

    def test_any_key_can_be_overridden(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DCFLEX_SCHEDULER__DRY_RUN", "true")
        monkeypatch.setenv("DCFLEX_SITE__NODES", "12")
        cfg = load_config_text("[scheduler]\ndry_run = false\n[site]\nnodes = 3")
        assert cfg.scheduler.dry_run is True and cfg.site.nodes == 12

    def test_bad_environment_value_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DCFLEX_SINKS__MQTT__PORT", "mqtt")
        monkeypatch.setenv("DCFLEX_SITE__NODEZ", "3")
        problems = _problems("")
        assert problems["sinks.mqtt.port"].endswith("got 'mqtt' (set by environment variable DCFLEX_SINKS__MQTT__PORT)")
        assert problems["site.nodez"].startswith("unknown key from environment variable DCFLEX_SITE__NODEZ")


class TestFiles:
    def test_missing_file_names_the_path(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.toml"
        with pytest.raises(ConfigError) as info:
            load_config(missing)
        assert info.value.source == str(missing)
        assert info.value.problems == (("(file)", "cannot read the file: No such file or directory"),)
        assert str(missing) in str(info.value)

    def test_a_directory_is_not_a_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read the file"):
            load_config(tmp_path)

    def test_errors_name_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "site.toml"
        path.write_text("[site]\nnodes = -1\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.source == str(path)
        assert [p for p, _ in info.value.problems] == ["site.nodes"]


def test_headroom_must_stay_below_the_drift_that_would_give_commands_back() -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text("[policy]\nheadroom_kw = 30\nreplan_drift_kw = 20\n")
    assert "headroom_kw must be below replan_drift_kw" in str(err.value)
