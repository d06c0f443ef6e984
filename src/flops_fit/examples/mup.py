"""μP (maximal-update parametrization) helpers shared by the example models (GPT, ViT).

Yang et al. 2022, "Tensor Programs V", in its Adam form, with ``m = width / base_width``: every
parameter has a *role*, and the role sets its Adam learning rate and weight decay.

    ======== ===================================== ============== ============
    role      what                                  learning rate  weight decay
    ======== ===================================== ============== ============
    input     embeddings, patch projection          lr             yes
    hidden    width x width matrices                lr / m         yes
    output    the readout                           lr             yes
    vector    gains, biases, position tables        lr             no
    ======== ===================================== ============== ============

(The initialisations and the readout / attention multipliers live in each model, next to the
layers they scale.) At ``m == 1`` μP equals the standard parametrization ("sp"), so a learning
rate tuned on the base width carries over to every width.
"""

from __future__ import annotations

from typing import Iterable

PARAMETRIZATIONS = ("mup", "sp")
ROLES = ("input", "hidden", "output", "vector")


def mup_param_groups(named_roles: Iterable[tuple[str, object, str]], lr: float, weight_decay: float,
                     width_mult: float) -> list[dict]:
    """AdamW groups from (name, parameter, role) triples, by the table above.

    Empty groups are dropped; each group carries a ``name`` (its role) for logging.
    """
    buckets: dict[str, list] = {r: [] for r in ROLES}
    for name, p, role in named_roles:
        if role not in buckets:
            raise ValueError(f"parameter {name}: unknown μP role {role!r}")
        if p.requires_grad:
            buckets[role].append(p)
    spec = {
        "input": (lr, weight_decay),
        "hidden": (lr / width_mult, weight_decay),
        "output": (lr, weight_decay),
        "vector": (lr, 0.0),
    }
    return [
        {"name": role, "params": ps, "lr": spec[role][0], "weight_decay": spec[role][1]}
        for role, ps in buckets.items()
        if ps
    ]


__all__ = ["PARAMETRIZATIONS", "ROLES", "mup_param_groups"]
