"""The one exception type for expected failures: the CLI prints its message as a single line."""

from __future__ import annotations


class KitError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it.

    A fix that is a kit command on the same database is given as `command` (e.g. "migrate --demo-data") and
    named in the message as `{command}`: the command line adds the --database-url the user gave, so the fix
    reaches the database that needs it, not the default one.
    """

    def __init__(self, message: str, *, command: str | None = None) -> None:
        self.message = message
        self.command = command
        super().__init__(self.render())

    def render(self, database_url: str | None = None) -> str:
        if self.command is None:
            return self.message
        from .connection import redacted

        command = f"./kit {self.command}" + (f" --database-url '{redacted(database_url)}'" if database_url else "")
        return self.message.format(command=f"`{command}`")


def one_line(error: BaseException) -> str:
    """An exception's message as one line: PostgreSQL's DETAIL and HINT lines joined with '; '."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__
