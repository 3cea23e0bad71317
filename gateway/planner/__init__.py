"""The pure planner: ``plan(directive, snapshot, policy, now) -> Plan``. No I/O, no awaits, no clock.

Rules, in the order they apply:

1. Load now is the metered ``snapshot.site_kw``, else the power model's estimate. The target is the
   strictest ``target_kw`` of the segments not yet ended; within ``tolerance_kw`` nothing is done.
2. Only running jobs are candidates, and never a ``critical`` one. A flex tier is a hard contract on
   the loss over the whole run: with elapsed E, remaining R (unknown: the event window D), already
   lost L, the event may cost at most ``a = min(1, max(0, max_loss·(E+R) − L) / D)`` of the throughput.
3. Levers, cheapest first: whole-watt GPU caps by water-filling — every flexible job walks down its
   DVFS curve (concave steps between the measured breakpoints, no deeper than its allowance) and the
   step taken next, across all jobs, is the one with the most kW shed per unit of GPU-weighted
   throughput lost, until the need is met (the last step stops at the whole-watt cap that just meets
   it). The first watts off a cap are the cheapest, so many jobs capped a little lose less work than
   a few capped deeply. Only when the caps within allowances fall short are jobs whose allowance
   covers the whole event paused (instead of capped), and preemptible requeueable ones checkpointed
   and stopped instead when the event is at least ``STOP_OVER_PAUSE_FACTOR`` times the stop's
   overhead (their freed nodes held until the end).
4. Economic mode (price segments): every flexible job worth less per MWh than the highest price in
   force is shed as deep as its tier allows; no target, no shortfall.
5. A target out of reach keeps every action that helps and reports a ``Shortfall`` and why.
6. Sheds start at ``max(now, ramp_start)`` and restores at the event's end, both spaced under the
   ramp rate (``ramp.ramp_offsets``); restores bring stopped jobs back first, then paused, then capped
   ones. A job capped before the event gets that cap back (the UNCAP's ``watts``), not none at all.
"""

from gateway.planner.core import plan
from gateway.planner.policy import PlannerPolicy

__all__ = ["PlannerPolicy", "plan"]
