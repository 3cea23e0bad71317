"""Replay scenarios: one TOML file says the site, its jobs, the grid's events and what to compare.

A scenario is validated as a whole before anything runs, and every problem is reported with its key path
(``events[2].duration_min: ...``) the way ``dcflex check-config`` reports a configuration, so a site can
write its own without reading this code. The format, section by section (see the shipped ones in
``simulators/scenarios/``):

- ``[scenario]``: ``name``, ``description``, ``seed`` (everything random derives from it), ``start``
  (timezone-aware), ``hours`` (the horizon), ``strategies`` to compare (``dcflex`` is the planner; the
  baselines are ``priority``, ``uniform-cap``, ``pause-all``), ``mode`` (``fast`` or ``protocol``),
  ``sample_s`` (how often the gateway reads the meter) and ``episodes`` (fast mode simulates only the
  hours around each event and jumps between them: a year in seconds).
- ``[site]``: the gateway's own ``[site]`` keys (nodes, GPUs per node, GPU model and power figures: idle draw,
  per-node base draw, the overhead factor that turns IT power into site power; the ramp rate...) under the
  same rules, plus meter noise and the scheduler's cycle.
- ``[jobs]``: either ``trace`` (a CSV, format in ``simulators.replay.jobs``) or ``[jobs.generator]``
  (fill at the start, arrival rate, sizes, durations, tier shares, checkpoint intervals and costs).
- ``[[events]]``: each as OpenADR carries it: start, duration, signal name and type, one value per
  interval, x-eiRampUp (``ramp_up_min``), x-eiRecovery (``recovery_min``), and how long before its start
  the VTN sends it (``notice_min``). ``[events_generator]`` draws many (a program's season) from the seed.
- ``[report]``: the tier weights of the weighted throughput (default: the Phoenix field demonstration's)
  and the window after an event in which its rebound is measured.
- ``[gateway]``: any part of the gateway's own configuration (``[policy]``, ``[notices]``, ``[tiers]``...),
  validated as ``dcflex check-config`` would; the site's figures come from ``[site]``.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, ValidationError, field_validator, model_validator

from gateway.config import DcflexConfig
from gateway.config.loader import describe_problem
from gateway.config.models import Fraction, NonNegFloat, PositiveFloat, Section, SiteConfig
from gateway.domain import Tier
from gateway.exceptions import ScenarioError
from gateway.policy.signals import unsupported_type

Range = tuple[NonNegFloat, NonNegFloat]

STRATEGY_NAMES = ("dcflex", "priority", "uniform-cap", "pause-all")
# The Phoenix field demonstration's weights (SRP_performance_by_flex.csv): by flexibility bucket.
PHOENIX_TIER_WEIGHTS: dict[Tier, float] = {
    Tier.CRITICAL: 0.230769231, Tier.FLEX_10: 0.230769231, Tier.FLEX_25: 0.192307692,
    Tier.FLEX_50: 0.128205128, Tier.PREEMPTIBLE: 0.128205128,
}




def _ordered(name: str, r: tuple[float, float]) -> tuple[float, float]:
    if r[0] > r[1]:
        raise ValueError(f"{name}: the low end ({r[0]:g}) is above the high end ({r[1]:g})")
    return r


class ScenarioMeta(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    seed: int = 0
    start: AwareDatetime
    hours: PositiveFloat = Field(le=24 * 366)
    strategies: tuple[str, ...] = STRATEGY_NAMES
    mode: Literal["fast", "protocol"] = "fast"
    sample_s: PositiveFloat = Field(default=60.0, le=3600)
    episodes: bool = False
    speed: PositiveFloat = Field(default=600.0, le=100_000, description="protocol mode: virtual seconds per wall second")

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in v if s not in STRATEGY_NAMES]
        if unknown:
            raise ValueError(f"unknown strategy {unknown[0]!r} (known: {', '.join(STRATEGY_NAMES)})")
        if not v:
            raise ValueError("name at least one strategy")
        if len(set(v)) != len(v):
            raise ValueError("a strategy is named twice")
        return v


class SiteSpec(SiteConfig):
    """The gateway's own site model (``SiteConfig``: one set of rules for both), with the number of nodes
    required, and what only a simulation has: the meter's noise and the scheduler's cycle."""

    nodes: int = Field(ge=1, le=100_000)
    noise_kw: NonNegFloat = 0.0
    sched_interval_s: PositiveFloat = 30.0

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class GeneratorSpec(Section):
    """Synthetic jobs: the cluster filled to ``fill`` at the start, then Poisson arrivals."""

    fill: Fraction = 0.9
    arrivals_per_hour: NonNegFloat = 0.0
    sizes: dict[int, PositiveFloat] = Field(default_factory=lambda: {8: 2.0, 16: 3.0, 32: 3.0, 64: 1.0},
                                            description="GPUs per job → relative weight")
    duration_h: Range = (3.0, 48.0)
    tiers: dict[Tier, NonNegFloat] = Field(default_factory=lambda: {t: 1.0 for t in Tier}, description="relative shares")
    checkpoint_interval_min: Range = (15.0, 60.0)
    checkpoint_s: Range = (60.0, 300.0)
    restart_s: Range = (60.0, 300.0)
    checkpointable: Fraction = 0.9
    requeueable: Fraction = 0.85
    workloads: tuple[str, ...] = ()
    value_per_mwh: Range | None = Field(default=None, description="what a job's work is worth (economic mode)")
    valued: Fraction = Field(default=1.0, description="share of the jobs that declare a value")

    @field_validator("duration_h", "checkpoint_interval_min", "checkpoint_s", "restart_s", "value_per_mwh")
    @classmethod
    def _range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if v is None else _ordered("range", v)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: dict[int, float]) -> dict[int, float]:
        if not v or any(g < 1 for g in v):
            raise ValueError("give at least one job size, each of 1 GPU or more")
        return v

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: dict[Tier, float]) -> dict[Tier, float]:
        if not any(x > 0 for x in v.values()):
            raise ValueError("at least one tier needs a positive share")
        return v


class JobsSpec(Section):
    trace: Path | None = Field(default=None, description="CSV of jobs, relative to the scenario file")
    generator: GeneratorSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> JobsSpec:
        if (self.trace is None) == (self.generator is None):
            raise ValueError("give exactly one of trace (a CSV file) and [jobs.generator]")
        return self


class EventSpec(Section):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    start: AwareDatetime
    duration_min: PositiveFloat = Field(le=7 * 24 * 60)
    signal: str = "LOAD_CONTROL"
    type: str = "x-loadControlPercentOffset"
    values: tuple[Annotated[float, Field(allow_inf_nan=False)], ...] = Field(min_length=1, max_length=1000)
    ramp_up_min: NonNegFloat = 0.0
    recovery_min: NonNegFloat = 30.0
    notice_min: NonNegFloat = 60.0

    @model_validator(mode="after")
    def _signal(self) -> EventSpec:
        why = unsupported_type(self.signal, self.type)  # the gateway's own table
        if why is not None:
            raise ValueError(why)
        return self

    @property
    def interval(self) -> timedelta:
        return timedelta(minutes=self.duration_min) / len(self.values)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.duration_min)

    @property
    def sent_at(self) -> datetime:
        return self.start - timedelta(minutes=self.ramp_up_min + self.notice_min)


class EventGenerator(Section):
    """Many events drawn from the seed: ``count`` days of the horizon (from ``months`` and ``weekdays``, one
    event a day at most), each starting in ``start_hour`` (local to the scenario's start), with the rest
    drawn from the ranges."""

    count: int = Field(ge=1, le=2000)
    months: tuple[int, ...] = tuple(range(1, 13))
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    start_hour: Range = (13.0, 19.0)
    duration_h: Range = (1.0, 4.0)
    signal: str = "LOAD_CONTROL"
    type: str = "x-loadControlPercentOffset"
    value: Range = (10.0, 30.0)
    ramp_up_min: NonNegFloat = 0.0
    recovery_min: NonNegFloat = 30.0
    notice_min: Range = (60.0, 1440.0)

    @field_validator("start_hour", "duration_h", "value", "notice_min")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _ordered("range", v)

    @field_validator("months")
    @classmethod
    def _months(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(not 1 <= m <= 12 for m in v):
            raise ValueError("months are 1..12")
        return v

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(not 0 <= d <= 6 for d in v):
            raise ValueError("weekdays are 0 (Monday) .. 6 (Sunday)")
        return v


class ReportSpec(Section):
    tier_weights: dict[Tier, NonNegFloat] = Field(default_factory=lambda: dict(PHOENIX_TIER_WEIGHTS))
    rebound_window_min: PositiveFloat = 60.0
    tolerance_kw: NonNegFloat | None = Field(default=None, description="default: the gateway's policy.tolerance_kw")


class Scenario(Section):
    scenario: ScenarioMeta
    site: SiteSpec
    jobs: JobsSpec
    events: tuple[EventSpec, ...] = ()
    events_generator: EventGenerator | None = None
    report: ReportSpec = ReportSpec()
    gateway: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def start(self) -> datetime:
        return self.scenario.start

    @property
    def end(self) -> datetime:
        return self.scenario.start + timedelta(hours=self.scenario.hours)

    @model_validator(mode="after")
    def _events(self) -> Scenario:
        if not self.events and self.events_generator is None:
            raise ValueError("give at least one [[events]] or an [events_generator]")
        for i, ev in enumerate(self.events):
            if ev.sent_at < self.start or ev.end > self.end:
                raise ValueError(f"events[{i}] (sent {ev.sent_at.isoformat()}, ends {ev.end.isoformat()}) is not "
                                 f"inside the horizon {self.start.isoformat()} .. {self.end.isoformat()}")
        ids = [e.id for e in self.events if e.id]
        if len(ids) != len(set(ids)):
            raise ValueError("two events have the same id")
        return self


@dataclass(frozen=True, slots=True)
class LoadedScenario:
    """A validated scenario, where it came from, and the gateway configuration it implies."""

    spec: Scenario
    source: str
    base_dir: Path
    gateway: DcflexConfig

    @property
    def name(self) -> str:
        return self.spec.name

    def events(self) -> list[EventSpec]:
        """Every event in time order: the listed ones and the generated ones, ids filled in."""
        evs = list(self.spec.events)
        if self.spec.events_generator is not None:
            evs += generate_events(self.spec.events_generator, self.spec.start, self.spec.end, self.spec.scenario.seed)
        evs.sort(key=lambda e: (e.start, e.id or ""))
        return [e if e.id else e.model_copy(update={"id": f"{self.name}-{i + 1:04d}"}) for i, e in enumerate(evs)]


def generate_events(gen: EventGenerator, start: datetime, end: datetime, seed: int) -> list[EventSpec]:
    """``gen.count`` events on distinct eligible days, reproducible from ``seed``."""
    rng = random.Random(seed * 7919 + 3)
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    d = day0
    while d < end:
        if d.month in gen.months and d.weekday() in gen.weekdays:
            days.append(d)
        d += timedelta(days=1)
    if len(days) < gen.count:
        raise ValueError(f"only {len(days)} eligible days in the horizon for {gen.count} events")
    out = []
    for day in sorted(rng.sample(days, gen.count)):
        at = day + timedelta(minutes=round(rng.uniform(*gen.start_hour) * 60))
        dur = round(rng.uniform(*gen.duration_h) * 4) / 4 * 60  # quarter hours
        notice = round(rng.uniform(*gen.notice_min))
        ev = EventSpec(start=at, duration_min=max(15.0, dur), signal=gen.signal, type=gen.type,
                       values=(round(rng.uniform(*gen.value), 1),), ramp_up_min=gen.ramp_up_min,
                       recovery_min=gen.recovery_min, notice_min=notice)
        if ev.sent_at >= start and ev.end + timedelta(minutes=ev.recovery_min) <= end:
            out.append(ev)
    return out


def _problems(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for e in exc.errors():
        path, msg = describe_problem(dict(e))
        out.append((f"{prefix}{path}" if path != "(top level)" or not prefix else prefix.rstrip("."), msg))
    return out


_SIMULATED = ("nodes", "gpus_per_node", "gpu_model", "gpu_idle_w", "node_base_w", "overhead", "ramp_rate_kw_per_min")


def gateway_config(spec: Scenario) -> DcflexConfig:
    """The gateway's configuration: the scenario's ``[gateway]`` tables with ``[site]``'s figures over them."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in spec.gateway.items()}
    site = dict(data.get("site", {}))
    s = spec.site
    # The simulated site's figures always; any other site key the scenario's [site] sets, too.
    own = set(_SIMULATED) | (s.model_fields_set & set(SiteConfig.model_fields))
    site.update({name: getattr(s, name) for name in sorted(own)})
    site.setdefault("site_id", spec.name)
    data["site"] = site
    return DcflexConfig.model_validate(data)


def parse_scenario(text: str, source: str, base_dir: Path) -> LoadedScenario:
    """Validate scenario TOML; raises ``ScenarioError`` listing every problem with its key path."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, [("(syntax)", f"not valid TOML: {exc}")]) from exc
    try:
        spec = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, _problems(exc)) from exc
    try:
        cfg = gateway_config(spec)
    except ValidationError as exc:
        raise ScenarioError(source, _problems(exc, "gateway.")) from exc
    problems = []
    if spec.jobs.trace is not None and not (base_dir / spec.jobs.trace).is_file():
        problems.append(("jobs.trace", f"no such file: {base_dir / spec.jobs.trace}"))
    if spec.events_generator is not None:
        try:
            generate_events(spec.events_generator, spec.start, spec.end, spec.scenario.seed)
        except ValueError as exc:
            problems.append(("events_generator", str(exc)))
        g = spec.events_generator
        why = unsupported_type(g.signal, g.type)
        if why is not None:
            problems.append(("events_generator.type", why))
    if problems:
        raise ScenarioError(source, problems)
    return LoadedScenario(spec=spec, source=source, base_dir=base_dir, gateway=cfg)


def shipped() -> dict[str, Path]:
    """The scenarios that come with dcflex, by name."""
    root = resources.files("simulators").joinpath("scenarios")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def load_scenario(name_or_path: str | Path) -> LoadedScenario:
    """A shipped scenario by name (``phoenix-2025``) or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix and str(name_or_path) in shipped():
        path = shipped()[str(name_or_path)]
    try:
        text = path.read_text()
    except OSError as exc:
        known = ", ".join(sorted(shipped()))
        raise ScenarioError(str(path), [("(file)", f"cannot read it ({exc.strerror or exc}); shipped scenarios: {known}")]) \
            from exc
    return parse_scenario(text, str(path), path.parent)
