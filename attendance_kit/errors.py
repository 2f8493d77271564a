"""The one exception type for expected failures: the CLI prints its message as a single line."""

from __future__ import annotations


class KitError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it.

    A fix that is a kit command on the same database is given as `command` (e.g. "migrate --demo-data") and
    named in the message as `{command}`: `str(error)` says `./kit migrate --demo-data`; the command line
    (`cli.error_line`) adds the --database-url the user gave, so the fix reaches the database that needs it.
    """

    def __init__(self, message: str, *, command: str | None = None) -> None:
        self.message = message
        self.command = command
        super().__init__(message.format(command=f"`./kit {command}`") if command else message)


def one_line(error: BaseException) -> str:
    """An exception's message as one line: PostgreSQL's DETAIL and HINT lines joined with '; '."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__
