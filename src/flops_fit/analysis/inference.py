"""The inference-aware optimum of Sardana et al. 2023 ("Beyond Chinchilla-Optimal: Accounting for
Inference in Language Model Scaling Laws", arXiv 2401.00448).

A model that will serve T inference tokens costs k N D FLOPs to train (k = 6 under the 6ND rule) and
2 N FLOPs per inference token. For a target loss l, the cheapest model over its life solves

    minimise  k N D + 2 N T   subject to  L(N, D) = l,

that is, over N alone with D = D_l(N) = (B / (l - E - A/N^alpha))^(1/beta) (:meth:`ChinchillaLaw.tokens_for_loss`).
With T = 0 the answer is the Chinchilla optimum for l (:meth:`ChinchillaLaw.optimum_for_loss`); as T grows,
the model gets smaller and is trained on more tokens. :func:`inference_optimum` puts both side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flops_fit.analysis.common import argmin_log
from flops_fit.errors import FlopsFitError
from flops_fit.law import SIX_ND, ChinchillaLaw

INFERENCE_FLOPS_PER_PARAM = 2.0  # a forward pass: 2 FLOPs per parameter per token


@dataclass
class InferenceOptimum:
    """The least-total-cost model that reaches ``loss`` and then serves ``inference_tokens``, and the
    Chinchilla-optimal model that reaches the same loss."""

    loss: float
    inference_tokens: float
    params: float
    tokens: float
    chinchilla_params: float
    chinchilla_tokens: float
    flops_per_token_coeff: float = SIX_ND
    inference_coeff: float = INFERENCE_FLOPS_PER_PARAM

    def _cost(self, N, D):
        return self.flops_per_token_coeff * N * D, self.inference_coeff * N * self.inference_tokens

    @property
    def train_flops(self) -> float:
        return self._cost(self.params, self.tokens)[0]

    @property
    def inference_flops(self) -> float:
        return self._cost(self.params, self.tokens)[1]

    @property
    def total_flops(self) -> float:
        return sum(self._cost(self.params, self.tokens))

    @property
    def chinchilla_total_flops(self) -> float:
        return sum(self._cost(self.chinchilla_params, self.chinchilla_tokens))

    @property
    def flops_saved(self) -> float:
        """Fraction of the Chinchilla model's lifetime FLOPs (training + inference) that this model saves."""
        return 1.0 - self.total_flops / self.chinchilla_total_flops

    def to_json(self) -> dict:
        return {"loss": self.loss, "inference_tokens": self.inference_tokens, "params": self.params,
                "tokens": self.tokens, "train_flops": self.train_flops, "inference_flops": self.inference_flops,
                "total_flops": self.total_flops, "chinchilla_params": self.chinchilla_params,
                "chinchilla_tokens": self.chinchilla_tokens, "chinchilla_total_flops": self.chinchilla_total_flops,
                "flops_saved": self.flops_saved}


def inference_optimum(law: ChinchillaLaw, loss: float, inference_tokens: float, *,
                      flops_per_token_coeff: float = SIX_ND,
                      inference_coeff: float = INFERENCE_FLOPS_PER_PARAM) -> InferenceOptimum:
    """The (N, D) reaching ``loss`` at the least k N D + 2 N T FLOPs (Sardana et al. 2023), beside Chinchilla's."""
    loss, T, k = float(loss), float(inference_tokens), float(flops_per_token_coeff)
    if not T >= 0:
        raise FlopsFitError(f"inference_tokens={inference_tokens} must be >= 0 (tokens the model will serve)")
    if not loss > float(law.E):
        raise FlopsFitError(f"a loss of {loss:.4g} is at or below the fitted irreducible loss E={float(law.E):.4g}: "
                            f"no model reaches it; ask for a higher loss")
    n_c, d_c = (float(v) for v in law.optimum_for_loss(loss))
    # the smallest model that reaches the loss with infinite data: N_min = (A / (loss - E))^(1/alpha)
    n_min = (float(law.A) / (loss - float(law.E))) ** (1.0 / float(law.alpha))

    def cost(lx):
        N = np.exp(lx)
        D = law.tokens_for_loss(N, loss)
        with np.errstate(all="ignore"):
            return np.log(k * N * D + inference_coeff * N * T)

    # search log N between N_min and the Chinchilla model (more parameters than Chinchilla's only costs more)
    lo, hi = np.log(n_min) + 1e-9, np.log(n_c) + 1e-9
    x = argmin_log(cost, 0.5 * (lo + hi), half_width=0.5 * (hi - lo), n=2001)
    N = float(np.exp(x))
    return InferenceOptimum(loss=loss, inference_tokens=T, params=N, tokens=float(law.tokens_for_loss(N, loss)),
                            chinchilla_params=n_c, chinchilla_tokens=d_c, flops_per_token_coeff=k,
                            inference_coeff=float(inference_coeff))


__all__ = ["InferenceOptimum", "inference_optimum", "INFERENCE_FLOPS_PER_PARAM"]
