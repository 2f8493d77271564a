"""The one exception type for expected failures: the CLI prints its message as a single line."""


class KitError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it."""


def one_line(error: BaseException) -> str:
    """An exception's message as one line: PostgreSQL's DETAIL and HINT lines joined with '; '."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__
