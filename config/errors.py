"""The one exception the config layer raises, worded as nginx words it."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration error at a place in a file.

    ``str(err)`` is nginx's message with its ``in FILE:LINE`` suffix, e.g.
    ``unknown directive "foo" in /etc/mailgate/mailgate.conf:12``.
    A ``line`` of 0 means the error is about the file as a whole (e.g. it cannot be opened).
    """

    def __init__(self, message: str, path: str | None = None, line: int = 0) -> None:
        self.message = message
        self.path = path
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is None or self.line == 0:
            return self.message
        if self.path == "command line":
            # nginx names no line for the text of -g: "... in command line".
            return f"{self.message} in command line"
        return f"{self.message} in {self.path}:{self.line}"
