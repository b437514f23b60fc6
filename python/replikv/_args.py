"""Argument types shared by the ``replikv`` subcommands."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """A whole number of at least 1; ``_`` and ``,`` may group its digits (``100_000``)."""
    try:
        number = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number
