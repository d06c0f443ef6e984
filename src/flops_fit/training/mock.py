"""The mock trainer: a closed-form ground-truth loss, for tests, demos and checking the fits.

    L(N, D) = E + A / N^alpha + B / D^beta

with seeded multiplicative noise. Each run also gets a loss curve (``history``) made of the
ground truth at fractions of its token budget, as if a run had been trained to each point:
exactly what Chinchilla's approach 1 (the envelope) assumes of real curves.
"""

from __future__ import annotations

import zlib

import numpy as np

from flops_fit.errors import FlopsFitError
from flops_fit.law import SIX_ND, ChinchillaLaw


# The ground truth is the Chinchilla surface itself (also the schema of ``trainer.ground_truth``);
# defaults: Epoch AI's fit of Chinchilla's runs (Besiroglu et al. 2024).
GroundTruth = ChinchillaLaw


def run_seed(run_id: str, seed: int) -> int:
    """A stable per-run seed (Python's hash() is salted per process; crc32 is not)."""
    return (zlib.crc32(run_id.encode()) * 1_000_003 + int(seed)) % (2**32)


def train_mock(experiment: dict, *, truth: GroundTruth, noise: float = 0.005, seed: int = 0,
               history_points: int = 20) -> dict:
    """One mock run: the record that ``runs/<id>.json`` holds."""
    if noise < 0:
        raise FlopsFitError(f"trainer.noise={noise} must be >= 0")
    rng = np.random.default_rng(run_seed(experiment["id"], seed))
    params, tokens = float(experiment["params"]), float(experiment["tokens"])
    fpt = float(experiment.get("flops_per_token") or SIX_ND * params)  # the 6ND rule when the plan has none
    n_hist = max(int(history_points), 1)
    fractions = np.arange(1, n_hist + 1) / n_hist
    seen = np.maximum(np.round(fractions * tokens), 1.0)
    clean = truth.loss(params, seen)
    losses = clean * (1.0 + noise * rng.standard_normal(n_hist))
    history = [
        {"tokens": int(d), "flops": float(d * fpt), "loss": float(l)} for d, l in zip(seen, losses)
    ]
    return {
        "status": "completed",
        "loss": float(losses[-1]),
        "true_loss": float(clean[-1]),
        "history": history,
        "trainer": "mock",
        "seed": int(seed),
        "steps": n_hist,
    }
