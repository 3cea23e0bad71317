"""The planner's knobs, and the fixed rules it applies between levers.

The knobs come from the site's configuration (ramp rate, tolerance, cap range); the rules below are
constants because they describe the cost model, not a site's preference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.domain import Tier
from gateway.exceptions import PlanningError
from gateway.power import PowerModel

# Pause or checkpoint-and-stop, for a job allowed to lose the whole event (see ``levers.full_lever``):
# a stop costs ``checkpoint_s + restart_s`` (+ the work since the last checkpoint when the job cannot
# checkpoint) on top of the event, a pause costs nothing extra but keeps the GPUs at idle draw, the
# job's memory held and its collectives waiting (long suspends risk NCCL/RPC timeouts that kill the
# job and lose far more). The stop is chosen when its extra cost is at most 1/STOP_OVER_PAUSE_FACTOR
# of the event window, i.e. by default (60 s + 120 s) events of 30 min or longer.
STOP_OVER_PAUSE_FACTOR = 10.0

# Float slack when comparing a lever's loss with an allowance, and the smallest kW worth a command.
LOSS_EPS = 1e-9
MIN_SHED_KW = 1e-6


@dataclass(frozen=True, slots=True)
class PlannerPolicy:
    """How far and how fast the planner may go.

    ``ramp_rate_kw_per_min`` bounds every change the gateway makes, shed and restore alike;
    ``tolerance_kw`` is how close to the target counts as met; caps are whole watts within
    ``[min_cap_w, max_cap_w]`` (and within the model's and the workload curve's range).

    ``job_weights`` chooses what the caps keep: None (the default) keeps the most GPU-throughput (every
    GPU-hour of work is worth the same); a weight per tier keeps the most weighted job throughput
    (Σ weight × throughput kept, each job counted once whatever its size), the objective of a site that
    values jobs rather than GPU-hours, like the Phoenix field demonstration's tier weights.

    ``headroom_kw`` is how far below the target plans aim, so a job starting or a noisy meter does not
    put the site over it before the next re-plan; a shortfall is still measured against the target.
    """

    model: PowerModel
    ramp_rate_kw_per_min: float = 200.0
    tolerance_kw: float = 5.0
    min_cap_w: float = 100.0
    max_cap_w: float = 400.0
    allow_checkpoint_stop: bool = True
    job_weights: Mapping[Tier, float] | None = None
    headroom_kw: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ramp_rate_kw_per_min) and self.ramp_rate_kw_per_min > 0):
            raise PlanningError(f"ramp_rate_kw_per_min must be a positive number, got {self.ramp_rate_kw_per_min!r}")
        if not (math.isfinite(self.tolerance_kw) and self.tolerance_kw >= 0):
            raise PlanningError(f"tolerance_kw must be >= 0, got {self.tolerance_kw!r}")
        if not (math.isfinite(self.min_cap_w) and math.isfinite(self.max_cap_w) and 0 < self.min_cap_w < self.max_cap_w):
            raise PlanningError(f"need 0 < min_cap_w < max_cap_w, got {self.min_cap_w!r} and {self.max_cap_w!r}")
        if not (math.isfinite(self.headroom_kw) and self.headroom_kw >= 0):
            raise PlanningError(f"headroom_kw must be >= 0, got {self.headroom_kw!r}")
        if self.job_weights is not None and any(not (math.isfinite(w) and w >= 0) for w in self.job_weights.values()):
            raise PlanningError(f"job weights must be finite and >= 0, got {dict(self.job_weights)!r}")
