"""Formatting of FLOPs, parameters and token counts, the same way everywhere.

>>> fmt_flops(1.2e18)
'1.2e18 FLOPs'
>>> fmt_params(3.5e8)
'350M params'
>>> fmt_tokens(7.0e9)
'7.0B tokens'
"""

from __future__ import annotations

import math

_SUFFIXES = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")]


def sci(x: float, digits: int = 2) -> str:
    """Compact scientific notation: 1.2e18 (no '+' and no leading zeros in the exponent)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return str(x)
    if x == 0:
        return "0"
    mant, exp = f"{x:.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp)}"


def human(x: float, digits: int = 2) -> str:
    """A count with a K/M/B/T suffix and at least `digits` significant digits: 350M, 7.0B, 12K."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return str(x)
    for scale, suffix in _SUFFIXES:
        if abs(x) >= scale:
            v = x / scale
            decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
            return f"{v:.{decimals}f}{suffix}"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.{digits}g}"


def fmt_flops(x: float) -> str:
    return f"{sci(x)} FLOPs"


def fmt_params(x: float) -> str:
    return f"{human(x)} params"


def fmt_tokens(x: float, unit: str = "tokens") -> str:
    return f"{human(x)} {unit}"
