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
