"""
What every txraft command line shares: C{--version}, which prints txraft's
own version from the installed package's metadata, and option values
whose errors name the option they belong to.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata
from typing import TypeVar

from twisted.python import usage

from txraft import answers

T = TypeVar("T")


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


def _convert(option: str, kind: str, convert: Callable[[str], T]) -> Callable[[str], T]:
    """A coercion with C{convert} whose error says C{--option} must be C{kind}."""

    def coerce(text: str) -> T:
        try:
            return convert(text)
        except ValueError:
            raise ValueError(f"--{option} must be {kind}, not {text!r}") from None

    coerce.coerceDoc = f"{kind[0].upper()}{kind[1:]}."  # type: ignore[attr-defined]
    return coerce


def wholeNumber(option: str) -> Callable[[str], int]:
    """A coercion to C{int} whose error names C{--option}."""
    return _convert(option, "a whole number", int)


def number(option: str) -> Callable[[str], float]:
    """A coercion to C{float} whose error names C{--option}."""
    return _convert(option, "a number", float)


def port(option: str) -> Callable[[str], int]:
    """A coercion to a TCP port number whose error names C{--option}."""

    def coerce(text: str) -> int:
        try:
            return answers.parsePort(text)
        except ValueError as e:
            raise ValueError(f"--{option}: {e}") from None

    coerce.coerceDoc = "A TCP port number."  # type: ignore[attr-defined]
    return coerce
