"""One OpenADR signal at a time → pieces of target load (kW) or price over time.

Each signal is translated on its own, without judging the result: a piece may carry a negative or
an absurdly high target, because deciding whether to follow an event needs all of its signals
together (``gateway.policy.mapping`` combines them and ``gateway.policy.decide`` judges them).
A signal that cannot be read (an unknown type, units, or a level outside 0–3) yields a reason
string instead of pieces, and the whole event is opted out of.

Sign conventions: dcflex only sheds. A ``LOAD_DISPATCH`` delta and an ``x-loadControlPercentOffset``
are read as reductions of their magnitude, whichever sign the VTN uses (OpenADR's text describes a
change in load, so -300 means "300 less"; many VTNs send 300 for the same request).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.config.models import PolicyConfig
from gateway.domain import GridEvent, Signal, SignalKind

SUPPORTED_TYPES: dict[SignalKind, tuple[str, ...]] = {
    SignalKind.SIMPLE: ("level",),
    SignalKind.LOAD_DISPATCH: ("setpoint", "delta", "level"),
    SignalKind.LOAD_CONTROL: ("x-loadControlPercentOffset", "x-loadControlSetpoint", "x-loadControlCapacity"),
    SignalKind.ELECTRICITY_PRICE: ("price", "priceRelative", "priceMultiplier"),
}

# Power units → factor to kW. Matched case-insensitively, so "mw" means megawatts (no one sends milliwatts).
_KW_PER_UNIT = {
    "w": 1e-3, "watt": 1e-3, "watts": 1e-3,
    "kw": 1.0, "kilowatt": 1.0, "kilowatts": 1.0,
    "mw": 1e3, "megawatt": 1e3, "megawatts": 1e3,
    "gw": 1e6, "gigawatt": 1e6, "gigawatts": 1e6,
}
# Energy in a price's units → factor to "per MWh" (checked longest suffix first).
_PER_MWH = (("kwh", 1e3), ("mwh", 1.0), ("gwh", 1e-3), ("wh", 1e6))


@dataclass(frozen=True, slots=True)
class Piece:
    """One interval of one signal, clipped to the event: either a target (kW) or a price (per MWh).

    ``note`` is the human explanation of how the value was reached; the strictest piece's note
    becomes the directive's reason.
    """

    start: datetime
    end: datetime
    target_kw: float | None
    price_per_mwh: float | None
    note: str


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a signal's value is read against: the site's baseline and its flexible load, in kW."""

    baseline_kw: float
    flexible_kw: float


def fmt(x: float) -> str:
    """A number for a human reason: at most one decimal, no trailing zeros ("2650", "2637.5")."""
    if not math.isfinite(x):
        return str(x)
    text = f"{x:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


def unsupported(signal: Signal) -> str | None:
    """Why dcflex cannot map ``signal`` at all, or None when its name and type are supported."""
    return unsupported_type(signal.name, signal.signal_type)


def unsupported_type(name: str, signal_type: str) -> str | None:
    """Why dcflex cannot map a signal named ``name`` of type ``signal_type``, or None when it can: the one
    table (``SUPPORTED_TYPES``) the gateway and the replay's scenarios are both checked against."""
    try:
        kind = SignalKind(name)
    except ValueError:
        names = ", ".join(k.value for k in SignalKind)
        return f"unsupported signal {name!r} (type {signal_type!r}): dcflex maps {names}"
    if _canonical_type(kind, signal_type) is None:
        types = ", ".join(SUPPORTED_TYPES[kind])
        return f"unsupported signal {name!r} (type {signal_type!r}): dcflex maps {kind.value} of type {types}"
    return None


def _canonical_type(kind: SignalKind, signal_type: str) -> str | None:
    """The supported spelling of ``signal_type`` (matched case-insensitively), or None."""
    wanted = signal_type.strip().casefold()
    for t in SUPPORTED_TYPES[kind]:
        if t.casefold() == wanted:
            return t
    return None


def kw_factor(units: str | None) -> float | None:
    """Factor from the signal's power units to kW; no units means kW; None when not a power unit."""
    if units is None or not units.strip():
        return 1.0
    return _KW_PER_UNIT.get(units.strip().casefold())


def per_mwh_factor(units: str | None) -> float | None:
    """Factor from a price's units to currency per MWh.

    No units, or a currency alone ("USD"), means per MWh (dcflex's unit, like the jobs'
    ``value_per_mwh``); "USD/kWh", "currencyPerKWh" and the like are scaled. None for an energy
    unit dcflex does not know.
    """
    if units is None:
        return 1.0
    u = units.strip().casefold().replace(" ", "")
    for suffix, factor in _PER_MWH:
        if u.endswith(suffix):
            return factor
    return None if "wh" in u else 1.0


def translate(signal: Signal, event: GridEvent, base: Baseline, policy: PolicyConfig) -> tuple[Piece, ...] | str:
    """The signal's intervals inside the event window as pieces, or the reason it cannot be read.

    The signal must be supported (see ``unsupported``).
    """
    kind = signal.kind
    stype = _canonical_type(kind, signal.signal_type) if kind is not None else None
    if kind is None or stype is None:
        return unsupported(signal) or f"unsupported signal {signal.name!r}"
    reader = _READERS[kind]
    pieces: list[Piece] = []
    for iv in signal.intervals:
        start, end = max(iv.start, event.start), min(iv.end, event.end)
        if end <= start:
            continue  # outside the event window: the event's own timing wins
        value = float(iv.value)  # an int that slipped through reads the same
        if not math.isfinite(value):
            return f"{kind.value} {stype} value {value!r} is not a finite number"
        got = reader(signal, stype, value, base, policy)
        if isinstance(got, str):
            return got
        target, price, note = got
        pieces.append(Piece(start, end, target, price, note))
    return tuple(pieces)


_Read = tuple[float | None, float | None, str] | str


def _simple(signal: Signal, stype: str, v: float, base: Baseline, policy: PolicyConfig) -> _Read:
    if not v.is_integer() or not 0 <= v <= 3:
        return f"SIMPLE level {fmt(v)} is not one of 0, 1, 2, 3"
    level = int(v)
    fraction = policy.simple_levels.get(str(level))
    if fraction is None:
        if level != 0:
            configured = ", ".join(sorted(policy.simple_levels)) or "none"
            return f"SIMPLE level {level} has no shed fraction in policy.simple_levels (configured levels: {configured})"
        fraction = 0.0
    if fraction == 0.0:
        return base.baseline_kw, None, f"SIMPLE level {level} → no shed → target {fmt(base.baseline_kw)} kW (the baseline)"
    # The flexible load cannot exceed what the site draws; a model that says so is clipped here.
    flexible = min(base.flexible_kw, base.baseline_kw)
    target = base.baseline_kw - fraction * flexible
    note = f"SIMPLE level {level} → shed {_pct(fraction)} of {fmt(flexible)} kW flexible load → target {fmt(target)} kW"
    return target, None, note


def _as_kw(signal: Signal, what: str, v: float) -> tuple[float, str] | str:
    """``v`` in the signal's units → (kW, "3 MW"), or the reason the units are not power."""
    factor = kw_factor(signal.units)
    if factor is None:
        return f"unsupported units {signal.units!r} for {what}: dcflex reads W, kW, MW, GW"
    shown = f"{fmt(v)} {signal.units.strip()}" if signal.units and signal.units.strip() else f"{fmt(v)} kW"
    return v * factor, shown


def _load_dispatch(signal: Signal, stype: str, v: float, base: Baseline, policy: PolicyConfig) -> _Read:
    mode = policy.load_dispatch if stype == "level" else stype
    how = f" (read as a {mode}: policy.load_dispatch)" if stype == "level" else ""
    got = _as_kw(signal, f"LOAD_DISPATCH {stype}", v)
    if isinstance(got, str):
        return got
    kw, shown = got
    if mode == "setpoint":
        return kw, None, f"LOAD_DISPATCH {stype} {shown}{how} → target {fmt(kw)} kW"
    shed = abs(kw)
    target = base.baseline_kw - shed
    note = (
        f"LOAD_DISPATCH {stype} {shown}{how} → shed {fmt(shed)} kW below the {fmt(base.baseline_kw)} kW baseline"
        f" → target {fmt(target)} kW"
    )
    return target, None, note


def _load_control(signal: Signal, stype: str, v: float, base: Baseline, policy: PolicyConfig) -> _Read:
    b = base.baseline_kw
    head = f"LOAD_CONTROL {stype}"
    if stype == "x-loadControlPercentOffset":
        pct = abs(v)
        target = b * (1.0 - pct / 100.0)
        return target, None, f"{head} {fmt(v)}% → {fmt(100.0 - pct)}% of the {fmt(b)} kW baseline → target {fmt(target)} kW"
    if stype == "x-loadControlCapacity" and v <= 1.0:
        # A value up to 1 is the allowed fraction of the baseline capacity; above 1 it is power.
        target = b * v
        return target, None, f"{head} {fmt(v)} → {_pct(v)} of the {fmt(b)} kW baseline → target {fmt(target)} kW"
    got = _as_kw(signal, head, v)
    if isinstance(got, str):
        return got
    kw, shown = got
    return kw, None, f"{head} {shown} → target {fmt(kw)} kW"


def _price(signal: Signal, stype: str, v: float, base: Baseline, policy: PolicyConfig) -> _Read:
    ref = policy.reference_price_per_mwh
    if stype == "priceMultiplier":
        price = ref * v
        how = f"{fmt(v)}× the reference {fmt(ref)}/MWh = {fmt(price)}/MWh"
    else:
        factor = per_mwh_factor(signal.units)
        if factor is None:
            return f"unsupported units {signal.units!r} for ELECTRICITY_PRICE {stype}: dcflex reads prices per Wh, kWh, MWh"
        unit = f" {signal.units.strip()}" if signal.units and signal.units.strip() else "/MWh"
        if stype == "priceRelative":
            price = ref + v * factor
            how = f"{v:+g}{unit} over the reference {fmt(ref)}/MWh = {fmt(price)}/MWh"
        else:
            price = v * factor
            how = f"{v:g}{unit}" + (f" = {fmt(price)}/MWh" if factor != 1.0 else "")
    note = f"ELECTRICITY_PRICE {stype} {how} → economic mode: shed jobs valued below the price"
    return None, price, note


_READERS: dict[SignalKind, Callable[[Signal, str, float, Baseline, PolicyConfig], _Read]] = {
    SignalKind.SIMPLE: _simple,
    SignalKind.LOAD_DISPATCH: _load_dispatch,
    SignalKind.LOAD_CONTROL: _load_control,
    SignalKind.ELECTRICITY_PRICE: _price,
}
