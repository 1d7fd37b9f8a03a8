"""The one exception type for problems a user can fix (bad input, missing files, wrong options).

The CLI prints its message as a single line on stderr and exits with status 2; anything else is a
bug and keeps its traceback.
"""


class DistilkitError(Exception):
    """A user-facing error: the message says what is wrong and, where possible, what to do."""
