"""
What every txraft command line shares: C{--version}, which prints txraft's
own version from the installed package's metadata, and option values
whose errors name the option they belong to.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata

from twisted.python import usage

from txraft import answers


def version() -> str:
    """txraft's version, as installed."""
    try:
        return metadata.version("txraft")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class Options(usage.Options):
    """C{usage.Options} whose C{--version} is txraft's, not Twisted's."""

    #: The program name C{--version} prints before the version.
    program = "txraft"

    def opt_version(self) -> None:
        """Print txraft's version and exit."""
        print(f"{self.program} {version()}")
        sys.exit(0)


def wholeNumber(option: str) -> Callable[[str], int]:
    """A coercion to C{int} whose error names C{--option}."""

    def coerce(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--{option} must be a whole number, not {text!r}") from None

    coerce.coerceDoc = "A whole number."  # type: ignore[attr-defined]
    return coerce


def number(option: str) -> Callable[[str], float]:
    """A coercion to C{float} whose error names C{--option}."""

    def coerce(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--{option} must be a number, not {text!r}") from None

    coerce.coerceDoc = "A number."  # type: ignore[attr-defined]
    return coerce


def port(option: str) -> Callable[[str], int]:
    """A coercion to a TCP port number whose error names C{--option}."""

    def coerce(text: str) -> int:
        try:
            return answers.parsePort(text)
        except ValueError as e:
            raise ValueError(f"--{option}: {e}") from None

    coerce.coerceDoc = "A TCP port number."  # type: ignore[attr-defined]
    return coerce
