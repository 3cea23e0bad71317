"""The simulated cluster, a scenario-driven VTN and the replay harness."""

from simulators.cluster import Arrivals, CommandRecord, JobReport, SimJobSpec, SimulatedCluster
from simulators.workloads import demo_arrivals, demo_mix, mix_for, phoenix_mix

__all__ = [
    "Arrivals",
    "CommandRecord",
    "JobReport",
    "SimJobSpec",
    "SimulatedCluster",
    "demo_arrivals",
    "demo_mix",
    "mix_for",
    "phoenix_mix",
]
