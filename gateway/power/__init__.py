"""Power: GPU power-cap curves, the site power model, baselines."""

from gateway.power.curves import CurveLibrary, PowerCurve, default_curves
from gateway.power.model import PowerModel

__all__ = ["CurveLibrary", "PowerCurve", "PowerModel", "default_curves"]
