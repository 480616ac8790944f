"""What goes wrong while loading a config: each problem with its key path.

Every stage (reading the file, YAML, values, cross-field rules) reports into
one :class:`Issues` list, so a file with several mistakes gets them all at once,
in the order the user reads the file.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigFileNotFoundError", "ConfigIssue", "Issues"]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: the dotted key path and what is wrong."""

    path: str
    message: str

    def render(self, source: str) -> str:
        """Return the issue as ``<source>: <path>: <message>``."""
        if self.path:
            return f"{source}: {self.path}: {self.message}"
        return f"{source}: {self.message}"


class ConfigError(ValueError):
    """A config file could not be loaded; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[ConfigIssue]) -> None:
        """Build the error from the file name and all the issues found in it."""
        self.source = source
        self.errors = list(errors)
        super().__init__("\n".join(issue.render(source) for issue in self.errors))


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist: a :class:`ConfigError` that is also a ``FileNotFoundError``.

    Code written for the seed library catches ``FileNotFoundError`` for a
    missing file; code written for this one catches ``ConfigError``.
    """

    def __init__(self, source: str) -> None:
        """Build the error for the missing file ``source``."""
        super().__init__(source, [ConfigIssue("", "config file not found")])
        self.errno = errno.ENOENT
        self.strerror = "config file not found"
        self.filename = source

    # OSError's "[Errno 2] ..." form would hide the file name and issue layout.
    __str__ = ConfigError.__str__


class _Invalid(Exception):
    """Raised by a converter; the message is the part after the key path."""


class Issues:
    """The problems found so far, in the order found."""

    def __init__(self) -> None:
        """Start with none."""
        self.issues: list[ConfigIssue] = []

    def issue(self, path: str, message: str) -> None:
        """Record that the key at ``path`` is wrong, and why."""
        self.issues.append(ConfigIssue(path, message))
