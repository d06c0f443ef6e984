"""Example plug-ins: models and datasets the core never imports.

Imports are lazy, so ``from flops_fit.examples import GPT`` loads torch only then and the
dataset classes do no I/O until first use.
"""

from importlib import import_module

_EXPORTS = {
    "GPT": "flops_fit.examples.gpt",
    "GPTConfig": "flops_fit.examples.gpt",
    "VisionTransformer": "flops_fit.examples.vit",
    "ViTConfig": "flops_fit.examples.vit",
    "TinyStoriesDataset": "flops_fit.examples.datasets",
    "CIFAR10Dataset": "flops_fit.examples.datasets",
    "gpt_loss_fn": "flops_fit.examples.losses",
    "vit_loss_fn": "flops_fit.examples.losses",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flops_fit.examples' has no attribute {name!r}")
