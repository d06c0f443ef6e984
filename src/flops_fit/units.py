"""Formatting of numbers, FLOPs, parameters and token counts: the one place that does it.

>>> fmt_flops(1.2e18)
'1.2e18 FLOPs'
>>> fmt_params(3.5e8)
'350M params'
>>> fmt_tokens(7.0e9)
'7.0B tokens'
>>> si(2.345e9)
'2.35G'
>>> fmt_interval([0.49, 0.531])
'[0.490, 0.531]'
>>> fmt_percent(0.0123)
'+1.2%'
>>> fmt_duration(4000)
'1 h 06 min'
"""

from __future__ import annotations

import math

_SUFFIXES = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")]  # counts: 7.0B tokens
_SI = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")]  # rates: 2.3GFLOP/s
MISSING = "–"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def sci(x: float, digits: int = 2) -> str:
    """Compact scientific notation: 1.2e18 (no '+' and no leading zeros in the exponent)."""
    if _missing(x):
        return str(x)
    if x == 0:
        return "0"
    mant, exp = f"{x:.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp)}"


def human(x: float, digits: int = 2) -> str:
    """A count with a K/M/B/T suffix and at least `digits` significant digits: 350M, 7.0B, 12K."""
    if _missing(x):
        return str(x)
    for scale, suffix in _SUFFIXES:
        if abs(x) >= scale:
            v = x / scale
            decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
            return f"{v:.{decimals}f}{suffix}"
    if float(x).is_integer() or abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def si(x: float, digits: int = 3) -> str:
    """A rate with an SI prefix (K, M, G, T, P) and `digits` significant digits: 2.35G, 812K."""
    if _missing(x):
        return str(x)
    for scale, prefix in _SI:
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{prefix}"
    return f"{x:.{digits}g}"


def fmt_flops(x: float) -> str:
    return f"{sci(x)} FLOPs"


def fmt_params(x: float) -> str:
    return f"{human(x)} params"


def fmt_tokens(x: float, unit: str = "tokens") -> str:
    return f"{human(x)} {unit}"


def fmt_duration(seconds: float) -> str:
    """A duration a person reads at a glance: 42 s, 3 min 05 s, 1 h 07 min, 2 d 03 h."""
    if _missing(seconds):
        return MISSING
    s = max(0, int(round(float(seconds))))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min"
    return f"{s // 86400} d {(s % 86400) // 3600:02d} h"


def fmt_float(x, digits: int = 3, kind: str = "g", missing: str = MISSING) -> str:
    """A plain number: `digits` significant digits (kind 'g') or decimals (kind 'f'); `missing` for None/NaN."""
    return missing if _missing(x) else f"{x:.{digits}{kind}}"


def fmt_percent(x, digits: int = 1, signed: bool = True, missing: str = MISSING) -> str:
    """A fraction as a percentage: 0.0123 -> '+1.2%'."""
    return missing if _missing(x) else f"{x:{'+' if signed else ''}.{digits}%}"


def fmt_interval(ci, fmt=None, digits: int = 3, missing: str = "") -> str:
    """'[lo, hi]' with each end formatted by `fmt` (default: `digits` decimals); `missing` when absent."""
    if not ci or ci[0] is None or ci[1] is None:
        return missing
    f = fmt or (lambda v: f"{v:.{digits}f}")
    return f"[{f(ci[0])}, {f(ci[1])}]"
