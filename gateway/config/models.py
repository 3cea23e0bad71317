"""One pydantic model per configuration section. Unknown keys are errors (``extra="forbid"``).

Every field has a safe default, so an empty file is a valid (simulated, dry) configuration; a
site overrides what differs. Secrets (passphrases, tokens, passwords) are ``SecretStr`` and are
meant to come from the environment, e.g. ``DCFLEX_SINKS__MQTT__PASSWORD``.
"""

from __future__ import annotations

import fnmatch
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.domain import Tier

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VenLimits(Section):
    """Bounds on what a VTN may send (``gateway.ven.oadr20b.intake``). A message past one is refused: answered with
    the specification's error code where its type has an answer, alerted once per kind, never acted on."""

    max_wire_bytes: int = Field(default=2 * 1024 * 1024, ge=4096, le=256 * 1024 * 1024,
                                description="bytes of one answer as sent (compressed or not)")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=4096, le=256 * 1024 * 1024,
                                description="bytes of one answer after decompression")
    max_depth: int = Field(default=40, ge=16, le=200, description="element nesting")
    max_elements: int = Field(default=100_000, ge=100, le=10_000_000, description="elements in one message")
    max_events: int = Field(default=100, ge=1, le=100_000, description="events in one oadrDistributeEvent")
    max_signals: int = Field(default=20, ge=1, le=1000, description="signals (and baselines) in one event")
    max_intervals: int = Field(default=2_000, ge=1, le=100_000, description="intervals in one signal")
    max_report_requests: int = Field(default=20, ge=1, le=10_000,
                                     description="report requests in one oadrCreateReport, and in force at once")
    max_id_chars: int = Field(default=256, ge=16, le=65_536, description="characters of an id or attribute")
    max_text_chars: int = Field(default=8_192, ge=256, le=1_048_576, description="characters of any other text")


class VenConfig(Section):
    """How the VEN reaches the utility's VTN."""

    protocol: Literal["openadr2"] = Field(default="openadr2", description="the VTN's protocol: OpenADR 2.0b")
    vtn_url: str = "http://127.0.0.1:8080/OpenADR2/Simple/2.0b"
    ven_name: str = "dcflex"
    ven_id: str | None = Field(default=None, description="fixed VEN id; None lets the VTN assign one")
    poll_interval_s: PositiveFloat = Field(default=10.0, le=3600)
    request_timeout_s: PositiveFloat = Field(default=10.0, le=300)
    cert: Path | None = None
    key: Path | None = None
    ca_file: Path | None = None
    passphrase: SecretStr | None = None
    vtn_fingerprint: str | None = None
    check_hostname: bool = True
    disable_signature: bool = True
    report_granularity_s: PositiveFloat = 60.0
    limits: VenLimits = VenLimits()

    @field_validator("vtn_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _tls_pair(self) -> VenConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: set both or neither")
        if self.cert is not None and self.ca_file is None:
            raise ValueError("a client certificate also needs ca_file (openleadr loads it for TLS)")
        return self


class SiteConfig(Section):
    """The site and its power model."""

    site_id: str = Field(default="site-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    nodes: int = Field(default=64, ge=1, le=100_000)
    gpus_per_node: int = Field(default=8, ge=1, le=64, description="a node without GPUs has nothing dcflex can cap")
    gpu_model: str = "A100"
    gpu_idle_w: NonNegFloat = 60.0
    node_base_w: NonNegFloat = 0.0
    overhead: float = Field(default=1.0, ge=1.0, le=3.0, allow_inf_nan=False)
    min_cap_w: PositiveFloat = 100.0
    max_cap_w: PositiveFloat = 400.0
    curves_file: Path | None = Field(default=None, description="DVFS sweep CSV; default: embedded Phoenix A100 data")
    max_shed_kw: NonNegFloat | None = Field(default=None, description="opt out of events asking for more")
    max_shed_fraction: Fraction = Field(default=0.6, description="of the baseline; opt out above")
    ramp_rate_kw_per_min: PositiveFloat = Field(default=200.0, description="for every change the gateway makes")
    baseline_minutes: int = Field(default=30, ge=1, le=24 * 60)
    baseline_method: Literal["prior-minutes", "x-of-y-days"] = Field(
        default="prior-minutes", description="how the baseline an event is measured against is computed"
    )
    baseline_x_days: int = Field(default=5, ge=1, le=30, description="x-of-y-days: the X highest days ...")
    baseline_y_days: int = Field(default=10, ge=1, le=60, description="... of the last Y days without an event")

    @model_validator(mode="after")
    def _caps(self) -> SiteConfig:
        if self.min_cap_w >= self.max_cap_w:
            raise ValueError("min_cap_w must be below max_cap_w")
        if self.baseline_x_days > self.baseline_y_days:
            raise ValueError("baseline_x_days must not exceed baseline_y_days")
        return self


def _check_levels(v: dict[str, float]) -> dict[str, float]:
    for k in v:
        if not k.isdigit() or int(k) > 3:
            raise ValueError(f"level {k!r} is not a SIMPLE level (allowed: 0, 1, 2, 3)")
    return v


class ProgramPolicy(Section):
    """How one demand-response program's signals read, where it differs from ``[policy]``: a utility's programs
    often give the same signal different meanings (what SIMPLE level 2 sheds, whether LOAD_DISPATCH ``level`` is
    a setpoint or a delta, the price a relative price moves from). An event belongs to the first program whose
    ``market_context`` matches its own (OpenADR's marketContext); keys left out keep ``[policy]``'s value."""

    market_context: str = Field(min_length=1, max_length=1024,
                                description="the program's market context as the VTN sends it; * and ? match any text")
    simple_levels: dict[str, Fraction] | None = None
    load_dispatch: Literal["setpoint", "delta"] | None = None
    default_ramp_s: NonNegFloat | None = None
    default_recovery_s: NonNegFloat | None = None
    opt_in_test_events: bool | None = None
    reference_price_per_mwh: float | None = Field(default=None, allow_inf_nan=False)

    @field_validator("simple_levels")
    @classmethod
    def _levels(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return None if v is None else _check_levels(v)

    def matches(self, market_context: str) -> bool:
        return fnmatch.fnmatchcase(market_context, self.market_context)

    def overrides(self) -> dict[str, object]:
        """The keys this program sets, to lay over ``[policy]``."""
        return {name: value for name, value in self if name != "market_context" and value is not None}


class PolicyConfig(Section):
    """How signals map to directives and how far the gateway may go."""

    simple_levels: dict[str, Fraction] = Field(
        default_factory=lambda: {"0": 0.0, "1": 0.15, "2": 0.30, "3": 0.50},
        description="SIMPLE level → fraction of the flexible load to shed",
    )
    load_dispatch: Literal["setpoint", "delta"] = "setpoint"
    default_ramp_s: NonNegFloat = Field(default=900.0, description="ramp after start when the event gives none")
    default_recovery_s: NonNegFloat = Field(default=1800.0, description="restore window when the event gives none")
    tolerance_kw: NonNegFloat = 5.0
    replan_drift_kw: PositiveFloat = Field(default=20.0, description="re-plan when measured load drifts this far")
    replan_interval_s: PositiveFloat = 60.0
    opt_in_test_events: bool = False
    max_target_factor: float = Field(default=2.0, gt=1.0, le=100, description="targets above this × baseline are absurd")
    reference_price_per_mwh: float = Field(
        default=50.0, allow_inf_nan=False, description="the price priceRelative adds to and priceMultiplier multiplies"
    )
    headroom_kw: NonNegFloat = Field(
        default=0.0, description="plans aim this far below the target, so a job starting does not put the site over it"
    )
    objective: Literal["gpu-throughput", "weighted-jobs"] = Field(
        default="gpu-throughput",
        description="what power caps keep: the most GPU-throughput, or the most weighted job throughput (tier_weights)",
    )
    tier_weights: dict[Tier, NonNegFloat] = Field(
        default_factory=lambda: {t: 1.0 for t in Tier},
        description="weighted-jobs: each tier's weight (a job counts once, whatever its size); missing tiers weigh 1",
    )
    programs: tuple[ProgramPolicy, ...] = Field(
        default=(), description="per-program signal mapping, matched on the event's market context; first match wins"
    )

    @model_validator(mode="after")
    def _headroom(self) -> PolicyConfig:
        if self.headroom_kw >= self.replan_drift_kw:
            raise ValueError("headroom_kw must be below replan_drift_kw (else the site, held below the target, "
                             "would give commands back and take them again)")
        return self

    @field_validator("simple_levels")
    @classmethod
    def _levels(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_levels(v)

    @field_validator("programs")
    @classmethod
    def _programs(cls, v: tuple[ProgramPolicy, ...]) -> tuple[ProgramPolicy, ...]:
        seen = [p.market_context for p in v]
        twice = sorted({m for m in seen if seen.count(m) > 1})
        if twice:
            raise ValueError(f"market_context {twice[0]!r} is given twice: the second would never match")
        return v

    def for_program(self, market_context: str) -> PolicyConfig:
        """This policy with the first matching program's keys laid over it (``ProgramPolicy``); itself when no
        program matches (or none is configured)."""
        for program in self.programs:
            if program.matches(market_context):
                return self.model_copy(update=program.overrides())
        return self


class TierRule(Section):
    """Assigns ``tier`` to jobs matching every given field (an empty rule matches nothing)."""

    tier: Tier
    qos: str | None = None
    partition: str | None = None
    account: str | None = None
    user: str | None = None
    name_pattern: str | None = Field(default=None, description="fnmatch pattern on the job name")
    label: str | None = Field(default=None, description="key=value in the job's labels/metadata")


class TiersConfig(Section):
    """Rules, first match wins; unmatched jobs get ``default`` (critical: never touched)."""

    default: Tier = Tier.CRITICAL
    rules: tuple[TierRule, ...] = ()


class SimulatedSchedulerConfig(Section):
    seed: int = 7
    workload_mix: Literal["demo", "phoenix"] = "demo"
    noise_kw: NonNegFloat = 0.5


_POWER_CAP_FIELDS = frozenset({"job_id", "node", "watts"})


def _template_fields(text: str) -> set[str]:
    """The ``{placeholders}`` of a str.format template (ValueError on broken braces)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


class SlurmSchedulerConfig(Section):
    squeue: str = "squeue"
    scontrol: str = "scontrol"
    scancel: str = "scancel"
    sinfo: str = "sinfo"
    power_cap_command: tuple[str, ...] = Field(
        default=("srun", "--overlap", "--jobid={job_id}", "-w", "{node}", "nvidia-smi", "-pl", "{watts}"),
        description="argv run once per node of a job to set its GPUs' power limit; {job_id} {node} {watts}",
    )
    ack_marker_path: str | None = Field(
        default=None, description="file a job creates when its checkpoint is safe, e.g. /shared/dcflex-ack/{job_id}"
    )
    retry_backoff_s: NonNegFloat = Field(default=1.0, le=60, description="first wait before retrying an unreachable Slurm")

    @field_validator("power_cap_command")
    @classmethod
    def _power_cap_command(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or not v[0]:
            raise ValueError("give the command as a list of arguments, e.g. [\"nvidia-smi\", \"-pl\", \"{watts}\"]")
        used: set[str] = set()
        for arg in v:
            try:
                used |= _template_fields(arg)
            except ValueError as exc:
                raise ValueError(f"argument {arg!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
        if unknown := used - _POWER_CAP_FIELDS:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; allowed: {{job_id}}, {{node}}, {{watts}}")
        if "watts" not in used:
            raise ValueError("the command must contain {watts}")
        if _template_fields(v[0]):
            raise ValueError("the program (first argument) must not contain a placeholder")
        return v

    @field_validator("ack_marker_path")
    @classmethod
    def _ack_marker_path(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            used = _template_fields(v)
        except ValueError as exc:
            raise ValueError(f"{exc}") from None
        if used != {"job_id"}:
            raise ValueError("must contain {job_id} and no other placeholder, e.g. /shared/dcflex-ack/{job_id}")
        if not v.startswith("/"):
            raise ValueError("must be an absolute path (jobs and the gateway run in different directories)")
        return v


class RayServeRule(Section):
    """How dcflex may treat the Ray Serve deployments whose ``app/deployment`` name matches ``deployment``."""

    deployment: str = Field(min_length=1, description="fnmatch pattern on app/deployment, e.g. 'llm/*'")
    tier: Tier
    gpus_per_replica: int | None = Field(default=None, ge=0, le=1024,
                                         description="GPUs one replica uses; default its ray_actor_options.num_gpus")
    min_replicas: int = Field(default=1, ge=1, le=100_000, description="replicas never taken away")
    workload: str | None = Field(default=None, description="the power curve of its GPUs; default app/deployment")


class RaySchedulerConfig(Section):
    dashboard_url: str = "http://127.0.0.1:8265"
    gateway_url: str | None = Field(
        default=None, description="URL Ray jobs reach the gateway's API at (DCFLEX_GATEWAY_URL); default from [api]"
    )
    checkpoint_grace_s: NonNegFloat = Field(
        default=120.0, le=3600, description="grace of a job whose metadata gives no dcflex.checkpoint_grace_s"
    )
    retry_backoff_s: NonNegFloat = Field(default=0.5, le=60, description="first wait before retrying the dashboard")
    serve: tuple[RayServeRule, ...] = Field(default=(), description="Serve deployments and their tiers; first match wins")
    hold_capacity: bool = Field(default=True, description="reserve a stopped job's GPUs until its restart")
    gpu_resource: str = Field(default="GPU", min_length=1, description="the Ray resource a hold reserves")
    hold_python: str = Field(default="python", min_length=1,
                             description="the Python (with ray) that runs the holder job on the head node")

    @field_validator("dashboard_url", "gateway_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v is not None else v


class SchedulerConfig(Section):
    kind: Literal["simulated", "slurm", "ray"] = "simulated"
    dry_run: bool = False
    command_timeout_s: PositiveFloat = Field(default=30.0, le=600)
    retries: int = Field(default=3, ge=0, le=10)
    simulated: SimulatedSchedulerConfig = SimulatedSchedulerConfig()
    slurm: SlurmSchedulerConfig = SlurmSchedulerConfig()
    ray: RaySchedulerConfig = RaySchedulerConfig()


class JournalConfig(Section):
    path: Path = Path("var/dcflex-journal.sqlite3")


class MqttTlsConfig(Section):
    enabled: bool = False
    ca_file: Path | None = Field(default=None, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(default=None, description="client certificate, when the broker asks for one")
    key_file: Path | None = None


class MqttSinkConfig(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = "dcflex"
    site_id: str = Field(default="site", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="second topic level")
    client_id: str = Field(default="dcflex-gateway", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    username: str | None = None
    password: SecretStr | None = None
    tls: MqttTlsConfig = MqttTlsConfig()
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: PositiveFloat = Field(default=1.0, le=60)
    reconnect_max_s: PositiveFloat = Field(default=30.0, le=600)
    max_inflight: int = Field(default=100, ge=1, le=10_000, description="QoS 1 publishes awaiting their PUBACK")
    override_allow: tuple[str, ...] = Field(
        default=(), description="client identities whose …/override/<identity> commands are obeyed"
    )
    max_override_bytes: int = Field(default=4096, ge=64, le=1_048_576)


class InfluxSinkConfig(Section):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = "dcflex"
    bucket: str = "dcflex"
    token: SecretStr | None = None
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="points per write")
    flush_interval_s: PositiveFloat = Field(default=1.0, le=60, description="longest a point waits before a write")
    power_interval_s: PositiveFloat = Field(default=60.0, le=3600, description="site power sample period")
    timeout_s: PositiveFloat = Field(default=10.0, le=120)
    retry_min_s: PositiveFloat = Field(default=1.0, le=60)
    retry_max_s: PositiveFloat = Field(default=60.0, le=3600)


class SinksConfig(Section):
    mqtt: MqttSinkConfig = MqttSinkConfig()
    influxdb: InfluxSinkConfig = InfluxSinkConfig()


class NoticesConfig(Section):
    """Advance notice to the grid before the site's load drops (``gateway.notices``)."""

    enabled: bool = True
    threshold_kw: NonNegFloat | None = Field(default=None, description="a drop of at least this many kW needs notice")
    threshold_pct: float | None = Field(default=10.0, gt=0, le=100,
                                        description="a drop of at least this % of the site's load needs notice")
    lead_times_min: tuple[PositiveFloat, ...] = Field(default=(60.0, 15.0), min_length=1,
                                                      description="notices go out this many minutes before a drop")
    update_kw: NonNegFloat | None = Field(default=None, description="re-announce when the drop's size moves this far; "
                                                                     "default half the threshold")
    update_min: PositiveFloat = Field(default=5.0, description="re-announce when the drop's time moves this far")
    snapshot_interval_s: PositiveFloat = Field(default=60.0, description="how often jobs' expected ends are re-read")
    defer_drops: bool = Field(default=False, description="start an event's shed no sooner than the shortest lead "
                                                         "time after its notice, when its ramp leaves room")
    webhook_url: str | None = Field(default=None, description="POST every notice here too (JSON, HMAC-signed)")
    webhook_secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key of the webhook's signature")
    webhook_retries: int = Field(default=5, ge=0, le=100)
    webhook_timeout_s: PositiveFloat = Field(default=10.0, le=300)
    webhook_backoff_s: NonNegFloat = Field(default=1.0, le=600, description="first wait before a retry; doubles")

    @field_validator("lead_times_min")
    @classmethod
    def _leads(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(sorted(set(v), reverse=True))

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _threshold(self) -> NoticesConfig:
        if self.threshold_kw is None and self.threshold_pct is None:
            raise ValueError("set threshold_kw or threshold_pct: which drops need notice")
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("webhook_secret is required with webhook_url: receivers check the signature")
        return self


class ServiceConfig(Section):
    """The long-running process (``dcflex run``)."""

    stop_timeout_s: float = Field(default=30.0, ge=1.0, le=600.0, allow_inf_nan=False,
                                  description="SIGTERM/SIGINT: the most a graceful stop takes before the rest is cut off")


class ApiConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)


class DcflexConfig(BaseSettings):
    """The whole configuration. Values from ``DCFLEX_<SECTION>__<KEY>`` override the file."""

    model_config = SettingsConfigDict(
        env_prefix="DCFLEX_", env_nested_delimiter="__", extra="forbid", frozen=True, nested_model_default_partial_update=True
    )

    ven: VenConfig = VenConfig()
    site: SiteConfig = SiteConfig()
    policy: PolicyConfig = PolicyConfig()
    tiers: TiersConfig = TiersConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    journal: JournalConfig = JournalConfig()
    sinks: SinksConfig = SinksConfig()
    notices: NoticesConfig = NoticesConfig()
    api: ApiConfig = ApiConfig()
    service: ServiceConfig = ServiceConfig()

    @model_validator(mode="after")
    def _ray_jobs_reach_the_gateway(self) -> DcflexConfig:
        """Ray jobs are told where the gateway's API is when they are submitted, before the API binds: a
        port the OS picks (0) would hand them an address nothing listens at."""
        ray = self.scheduler.ray
        if self.scheduler.kind == "ray" and ray.gateway_url is None and (self.api.port == 0 or not self.api.enabled):
            why = "port = 0 (chosen at start-up)" if self.api.enabled else "enabled = false"
            raise ValueError(f"scheduler.ray.gateway_url: Ray jobs need the gateway's API address, and [api] has {why}; "
                             "set scheduler.ray.gateway_url, or give [api] a fixed port")
        return self
