"""The Chinchilla loss surface L(N, D) = E + A / N^alpha + B / D^beta as one value object.

Every formula that follows from (E, A, B, alpha, beta) lives here and nowhere else: the loss,
the allocation exponents a = beta / (alpha + beta) and b = alpha / (alpha + beta), the
prefactor G = (alpha A / (beta B))^(1 / (alpha + beta)), and the compute-optimal allocation

    N_opt(C) = G (C / k)^a,   D_opt(C) = (C / k)^b / G      under C = k N D (k = 6 by default),

or, for any other FLOPs-per-token function, the numerical minimum of L(N, C / fpt(N)).

The fields may be numpy arrays (one value per bootstrap replicate, say): every method
broadcasts. The mock trainer's ground truth (``flops_fit.training.mock.GroundTruth``) and the
parametric fit (approach 3) are both a :class:`ChinchillaLaw`.

Numpy only; imports nothing from flops_fit but its error type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from flops_fit.errors import FlopsFitError
from flops_fit.flops import SIX_ND  # the 6ND rule (training FLOPs = 6 x parameters x tokens) has one home

FIELDS = ("E", "A", "B", "alpha", "beta")

# Up to about this many epochs a repeated token is worth nearly a new one; past it, repeats lose value
# (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", Fig. 3). ff-plan warns past it.
REPEAT_FREE_EPOCHS: float = 4.0


@dataclass
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta.

    Defaults: Epoch AI's fit of Chinchilla's runs (Besiroglu et al. 2024), the mock trainer's
    default ground truth."""

    E: float = 1.8169
    A: float = 482.01
    B: float = 2085.43
    alpha: float = 0.3478
    beta: float = 0.3659

    # ------------------------------------------------------------------ construction and I/O

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], *, index=None) -> "ChinchillaLaw":
        """A law from any mapping with E, A, B, alpha, beta (a fit dict, analysis.json's
        ``fits.parametric``); ``index`` picks entries of array-valued mappings (e.g. ``(slice(None), None)``
        turns (R,) replicate arrays into (R, 1) columns)."""
        vals = {}
        for k in FIELDS:
            v = m[k]
            if index is not None:
                v = np.asarray(v, dtype=float)[index]
            vals[k] = v
        return cls(**vals)

    def to_json(self) -> dict:
        return {k: float(getattr(self, k)) for k in FIELDS}

    def validate(self, prefix: str = "trainer.ground_truth") -> "ChinchillaLaw":
        """Raise :class:`FlopsFitError` naming ``<prefix>.<field>`` unless A, B, alpha, beta > 0 and E >= 0."""
        for k in ("A", "B", "alpha", "beta"):
            v = getattr(self, k)
            if not (np.all(np.isfinite(v)) and np.all(np.asarray(v) > 0)):
                raise FlopsFitError(f"{prefix}.{k}={v} must be positive")
        if not (np.all(np.isfinite(self.E)) and np.all(np.asarray(self.E) >= 0)):
            raise FlopsFitError(f"{prefix}.E={self.E} must be >= 0")
        return self

    # ------------------------------------------------------------------ the surface

    def loss(self, N, D):
        """L(N, D), broadcasting N, D against each other and against array-valued fields."""
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    # ------------------------------------------------------------------ allocation under C = k N D

    # Degenerate fits (a sweep whose loss does not fall with data fits B = 0, one whose loss does not
    # fall with size A = 0) have no finite allocation: the formulas below then give inf, 0 or nan, never
    # raise (the fields are taken as float64, whose division by zero numpy answers with inf/nan), and
    # :meth:`degenerate` says why in one line.

    @property
    def a(self):
        """Exponent of N_opt(C) under C = k N D: beta / (alpha + beta)."""
        al, be = _f(self.alpha), _f(self.beta)
        with np.errstate(all="ignore"):
            return _scalar(be / (al + be))

    @property
    def b(self):
        """Exponent of D_opt(C) under C = k N D: alpha / (alpha + beta)."""
        al, be = _f(self.alpha), _f(self.beta)
        with np.errstate(all="ignore"):
            return _scalar(al / (al + be))

    @property
    def G(self):
        """G = (alpha A / (beta B))^(1 / (alpha + beta)): N_opt = G (C/k)^a, D_opt = (C/k)^b / G.

        inf when B = 0 or beta = 0 (data buys nothing: all compute goes to parameters), 0 when A = 0 or
        alpha = 0; see :meth:`degenerate`."""
        A, B, al, be = _f(self.A), _f(self.B), _f(self.alpha), _f(self.beta)
        with np.errstate(all="ignore"):
            return _scalar((al * A / (be * B)) ** (1.0 / (al + be)))

    def degenerate(self) -> str | None:
        """One line saying why this law has no compute-optimal allocation, or None when it has one.

        A scalar law only (an array-valued one answers for its first entry). A term with a zero
        prefactor or exponent means the loss does not fall along that axis: with B or beta at 0
        the loss does not improve with data (e.g. a sweep on random tokens), so the optimum puts
        every FLOP into parameters and N_opt is infinite; with A or alpha at 0, the reverse."""
        first = {k: float(np.ravel(_f(getattr(self, k)))[0]) for k in FIELDS}
        if not all(np.isfinite(v) for v in first.values()):
            bad = ", ".join(f"{k}={v:g}" for k, v in first.items() if not np.isfinite(v))
            return f"the fitted law has non-finite parameters ({bad})"
        flat_d = first["B"] <= 0 or first["beta"] <= 0
        flat_n = first["A"] <= 0 or first["alpha"] <= 0
        if flat_d and flat_n:
            return (f"the loss falls neither with data nor with model size (A={first['A']:.3g}, B={first['B']:.3g}): "
                    f"no compute-optimal allocation exists; check that the data is learnable (not random tokens)")
        if flat_d:
            return (f"the loss does not fall with data (B={first['B']:.3g}, beta={first['beta']:.3g}): no "
                    f"compute-optimal allocation exists; check that the data is learnable (not random tokens)")
        if flat_n:
            return (f"the loss does not fall with model size (A={first['A']:.3g}, alpha={first['alpha']:.3g}): "
                    f"no compute-optimal allocation exists; check that the size parameter changes the model")
        return None

    def n_opt(self, C, flops_per_token_coeff: float = SIX_ND):
        """Compute-optimal parameters at C FLOPs under C = k N D."""
        with np.errstate(all="ignore"):
            return self.G * (np.asarray(C, dtype=float) / flops_per_token_coeff) ** self.a

    def d_opt(self, C, flops_per_token_coeff: float = SIX_ND):
        """Compute-optimal tokens at C FLOPs under C = k N D."""
        with np.errstate(all="ignore"):
            return (np.asarray(C, dtype=float) / flops_per_token_coeff) ** self.b / self.G

    def n_opt_for_tokens(self, D):
        """The compute-optimal parameter count whose optimal data is D tokens: N = G (G D)^(a / b).

        The budget C at which D_opt(C) = D, then N_opt(C); the FLOPs-per-token coefficient cancels.
        Muennighoff et al. (2023) call it U_N when D is the unique data."""
        with np.errstate(all="ignore"):
            G = self.G
            return G * (G * np.asarray(D, dtype=float)) ** (self.a / self.b)

    def tokens_for_loss(self, N, loss):
        """The tokens D at which a model of N parameters reaches ``loss``: (B / (loss - E - A/N^alpha))^(1/beta);
        inf where N alone cannot get there (loss - E - A/N^alpha <= 0)."""
        N = np.asarray(N, dtype=float)
        gap = np.asarray(loss, dtype=float) - self.E - self.A / N ** self.alpha
        with np.errstate(all="ignore"):
            return np.where(gap > 0, (self.B / np.where(gap > 0, gap, 1.0)) ** (1.0 / self.beta), np.inf)

    def optimum_for_loss(self, loss):
        """(N, D) of the compute-optimal model that reaches ``loss`` (any C = k N D: k cancels).

        On the optimum alpha A/N^alpha = beta B/D^beta, so loss - E = (1 + alpha/beta) A/N^alpha."""
        gap = np.asarray(loss, dtype=float) - self.E
        with np.errstate(all="ignore"):
            N = (self.A * (1.0 + self.alpha / self.beta) / gap) ** (1.0 / self.alpha)
            D = (self.beta * self.B / (self.alpha * self.A / N ** self.alpha)) ** (1.0 / self.beta)
        return N, D

    def k_N(self, flops_per_token_coeff: float = SIX_ND):
        """Prefactor of N_opt = k_N C^a under C = k N D: G k^-a."""
        with np.errstate(all="ignore"):
            return self.G * _f(flops_per_token_coeff) ** (-self.a)

    def k_D(self, flops_per_token_coeff: float = SIX_ND):
        """Prefactor of D_opt = k_D C^b under C = k N D: k^-b / G."""
        with np.errstate(all="ignore"):
            return _f(flops_per_token_coeff) ** (-self.b) / self.G

    def allocation(self, C, fpt: Callable | None = None, *, bounds=(1e3, 1e16)):
        """(N_opt, D_opt) at C FLOPs: closed form when ``fpt`` is None (C = 6ND), else the
        minimum of L(N, C / fpt(N)) over log N found numerically (vectorised golden section)."""
        if fpt is None:
            return self.n_opt(C), self.d_opt(C)
        return _numeric_allocation(self, np.asarray(C, dtype=float), fpt, bounds)


def _f(v):
    """A field as float64 (a Python float divides by zero with an exception, numpy with inf/nan)."""
    return np.asarray(v, dtype=float)


def _scalar(v):
    """A 0-d result as a numpy float scalar (a float); arrays as they are."""
    return v[()] if isinstance(v, np.ndarray) and v.ndim == 0 else v


def _numeric_allocation(law: ChinchillaLaw, C, fpt, bounds):
    """Golden-section search on log N of L(N, C/fpt(N)), vectorised over every broadcast cell."""
    E, A, B, al, be = (np.asarray(getattr(law, k), dtype=float) for k in FIELDS)
    shape = np.broadcast(E, A, B, al, be, C).shape
    A, B, al, be, C = (np.broadcast_to(v, shape).astype(float) for v in (A, B, al, be, C))

    def loss(x):
        n = np.exp(x)
        d = C / fpt(n)
        with np.errstate(all="ignore"):
            v = A * np.exp(-al * x) + B * d ** (-be)
        return np.where(np.isfinite(v), v, np.inf)

    lo0, hi0 = np.log(bounds[0]), np.log(bounds[1])
    # coarse grid to bracket the minimum (the objective is unimodal for smooth fpt, but the
    # grid keeps us safe when fpt is only piecewise smooth)
    grid = np.linspace(lo0, hi0, 121)
    vals = np.stack([loss(np.full(shape, x)) for x in grid], axis=0)
    k = np.argmin(vals, axis=0)
    step = grid[1] - grid[0]
    lo = grid[0] + (k - 1) * step
    hi = grid[0] + (k + 1) * step
    gr = (np.sqrt(5.0) - 1.0) / 2.0
    x1 = hi - gr * (hi - lo)
    x2 = lo + gr * (hi - lo)
    f1, f2 = loss(x1), loss(x2)
    for _ in range(60):
        left = f1 < f2
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        x2n = np.where(left, x1, lo + gr * (hi - lo))
        x1n = np.where(left, hi - gr * (hi - lo), x2)
        f2n = np.where(left, f1, np.nan)
        f1n = np.where(left, np.nan, f2)
        x1, x2 = x1n, x2n
        new1 = loss(x1)
        new2 = loss(x2)
        f1 = np.where(left, new1, f1n)
        f2 = np.where(left, f2n, new2)
    x = 0.5 * (lo + hi)
    N = np.exp(x)
    return N, C / fpt(N)


__all__ = ["ChinchillaLaw", "FIELDS", "SIX_ND", "REPEAT_FREE_EPOCHS"]
