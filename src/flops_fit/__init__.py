"""flops-fit: compute-optimal scaling laws for your own model and data.

>>> import flops_fit
>>> result = flops_fit.find_optimal(model_cls=MyNet, model_size_param="width", dataset=my_data,
...                                 compute_budgets=[1e11, 1e12], mode="mock")   # doctest: +SKIP
>>> print(result.chinchilla_table())                                            # doctest: +SKIP
"""

from flops_fit.errors import FlopsFitError

__version__ = "0.1.0"
__all__ = ["FlopsFitError", "Result", "find_optimal", "load", "__version__"]


def __getattr__(name):
    if name in ("find_optimal", "load", "Result"):
        from flops_fit import api

        return getattr(api, name)
    raise AttributeError(f"module 'flops_fit' has no attribute {name!r}")
