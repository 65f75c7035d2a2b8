"""The one exception type for bad user input.

Library code raises `InputError` with a one-line message that names the file (or
option), the field and the fix. The CLI prints it as `error: ...` and exits with
code 2, so a user never sees a traceback for a mistake in their input.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a file, a field or an option. Message: one line, with the fix."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class DivergedError(InputError):
    """A model whose scores hold NaN: a metric computed from them would be meaningless (a NaN never outranks the
    target). The message names the run and the epoch; the fix is a lower learning rate or a gradient limit."""
