"""The one error type users see.

Bad input raises :class:`FlopsFitError` with a message that names the key or file and
says how to fix it. The command-line stages print that single line and exit non-zero.
"""


class FlopsFitError(Exception):
    """A problem with the user's input, config or run directory (not a bug in flops-fit)."""
