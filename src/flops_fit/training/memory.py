"""Keep the memory a training step frees, for the next step, instead of handing it back to the OS.

glibc's ``malloc`` serves blocks above a threshold (128 KB at first, adjusted as blocks are freed)
with fresh ``mmap`` pages and returns them with ``munmap`` when freed. A training step allocates
and frees the same large tensors every time (activations, the logits and their gradients), so every
step page-faults its way through megabytes of new zeroed pages: for the demo's d_model-8 GPT, 1,350
minor page faults per step in ff-train's loop and up to 5,500 in a bare loop of steps, where they took
about a quarter of the step time on this project's 2-core VM (docs/performance.md).

:func:`hold_freed_memory` fixes the thresholds once per process with ``mallopt``: blocks up to
32 MB (glibc's largest mmap threshold) come from the heap, and freed memory stays there for reuse
until 256 MB of it sits unused at the top. It changes where tensors live, never what is computed.
It does nothing off glibc (macOS, musl) and when the user has set any ``MALLOC_*`` variable of these
three, which then rules.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 256 << 20, M_TOP_PAD: 16 << 20}
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def hold_freed_memory() -> bool:
    """Set the allocator's thresholds for training (once per process). True when they are in force."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or any(v in os.environ for v in USER_VARIABLES):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(option, value) == 1 for option, value in SETTINGS.items())
