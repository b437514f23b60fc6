"""Argument types shared by the ``replikv`` subcommands."""

from __future__ import annotations

import argparse


def _whole(text: str, what: str) -> int:
    """``text`` as an int; ``_`` and ``,`` may group its digits (``100_000``)."""
    try:
        return int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive(text: str) -> int:
    """A whole number of at least 1."""
    number = _whole(text, "a whole number")
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def lsn(text: str) -> int:
    """A log sequence number: a whole number of at least 0."""
    number = _whole(text, "an LSN")
    if number < 0:
        raise argparse.ArgumentTypeError(f"an LSN is at least 0, got {number}")
    return number


def seconds(text: str) -> float:
    """A duration in seconds: above 0 and at most an hour (not NaN)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < number <= 3600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 3600, got {number}")
    return number


def address(text: str) -> str:
    """A server's ``host:port``, the port between 1 and 65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"not host:port with a port from 1 to 65535 (for example 127.0.0.1:7400): {text!r}"
        )
    return text
