"""flops-fit: compute-optimal scaling laws for your own model and data.

>>> import flops_fit
>>> result = flops_fit.find_optimal(run_dir="outputs/nb", trainer="mock")  # doctest: +SKIP
>>> result.table()                                                          # doctest: +SKIP
"""

from flops_fit.errors import FlopsFitError

__version__ = "0.1.0"
__all__ = ["FlopsFitError", "find_optimal", "__version__"]


def __getattr__(name):
    if name == "find_optimal":
        from flops_fit.api import find_optimal

        return find_optimal
    raise AttributeError(f"module 'flops_fit' has no attribute {name!r}")
