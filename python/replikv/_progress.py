"""The progress bars of the long calls (``progress=True``): a widget in Jupyter, one line in
a terminal.

``tqdm.auto`` is not used: in a Jupyter kernel without ipywidgets it warns
``TqdmWarning: IProgress not found`` (an error under ``-W error``) before falling back to the
text bar. Here the text bar is chosen up front in that case, without a warning.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _bar_class() -> Any:
    """tqdm's notebook widget under a Jupyter kernel that has ipywidgets, else its text bar."""
    if "ipykernel.zmqshell" in sys.modules and importlib.util.find_spec("ipywidgets"):
        from tqdm.notebook import tqdm as notebook_bar

        return notebook_bar
    from tqdm.std import tqdm as text_bar

    return text_bar


class ProgressBar:
    """A bar for a count that grows to ``total`` (``None``: unknown), ``unit`` by ``unit``.

    Called with the count done so far; ``close()`` leaves one final line in a terminal.
    """

    def __init__(self, description: str, total: int | None, unit: str = "rows") -> None:
        self._bar = _bar_class()(total=total, desc=description, unit=f" {unit}", leave=True)
        self._done = 0

    def __call__(self, done: int) -> None:
        if done == self._done:
            return
        if self._bar.total is not None and done >= self._bar.total:
            # The end is drawn once, by close(): drawn here too, it would be the same line
            # twice wherever the text bar's carriage returns do not overwrite (a log file,
            # a CI job, a notebook's saved output).
            self._bar.n = done
        else:
            self._bar.update(done - self._done)
        self._done = done

    def retotal(self, total: int) -> None:
        """Changes the total (a target that moved)."""
        if total != self._bar.total:
            self._bar.total = total
            self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


class StagedProgress:
    """The bars of a wait that goes through stages (``Replica.wait_for``): called with the
    stage's name, the count done in it and its total, it starts a new bar per stage."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._stage: str | None = None
        self._bar: ProgressBar | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage or self._bar is None:
            self.close()
            unit = "rows" if stage == "snapshot" else "entries"
            self._bar = ProgressBar(f"{self._description} {stage}", total, unit)
            self._stage = stage
        self._bar.retotal(total)
        self._bar(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
