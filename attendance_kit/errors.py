"""The one exception type for expected failures: the CLI prints its message as a single line."""


class KitError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it."""
