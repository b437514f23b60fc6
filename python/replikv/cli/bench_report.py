"""What ``replikv bench`` reports: replikv's figures next to what they are compared with,
and the ratio, as a table for people or as JSON for programs."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: The width the table's titles and notes are wrapped to.
WIDTH = 100


@dataclass(frozen=True)
class Figure:
    """One measure of a scenario: replikv's figure and, unless ``other`` is ``None``, the
    same measure of the baseline it is compared with."""

    measure: str
    unit: str
    higher_is_better: bool
    replikv: float
    other: float | None = None

    @property
    def ratio(self) -> float | None:
        """How many times better replikv's figure is (below 1: worse): ours / theirs for a
        rate, theirs / ours for a latency."""
        if self.other is None:
            return None
        if self.higher_is_better:
            return self.replikv / self.other
        return self.other / self.replikv


@dataclass
class Outcome:
    """What one scenario measured."""

    name: str
    title: str
    #: What replikv's figures are compared with ("sqlite3", "no replica").
    baseline: str
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)
    #: What replikv's figures are of ("replikv", "with a replica").
    subject: str = "replikv"


def better(figure: Figure, outcome: Outcome) -> str | None:
    """Who did better on ``figure``: the outcome's subject, its baseline, or "neither"."""
    ratio = figure.ratio
    if ratio is None:
        return None
    if ratio == 1:
        return "neither"
    return outcome.subject if ratio > 1 else outcome.baseline


def figure_to_dict(figure: Figure, outcome: Outcome) -> dict[str, Any]:
    """``figure`` for ``--json``: ``ratio`` is what ``ratio_of`` says ("replikv/sqlite3"
    for a rate, "sqlite3/replikv" for a latency), so above 1 always means replikv did
    better; ``replikv`` is replikv's figure, ``baseline_value`` the baseline's."""
    compared = figure.other is not None
    ours, theirs = outcome.subject, outcome.baseline
    return {
        "measure": figure.measure,
        "unit": figure.unit,
        "better_is": "higher" if figure.higher_is_better else "lower",
        "replikv": figure.replikv,
        "baseline": theirs if compared else None,
        "baseline_value": figure.other,
        "ratio": figure.ratio,
        "ratio_of": (
            None
            if not compared
            else f"{ours}/{theirs}"
            if figure.higher_is_better
            else f"{theirs}/{ours}"
        ),
        "better": better(figure, outcome),
    }


def outcomes_to_dict(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Each scenario's title, what it compares, its figures and notes, by its name."""
    return {
        outcome.name: {
            "title": outcome.title,
            "subject": outcome.subject,
            "baseline": outcome.baseline,
            "figures": [figure_to_dict(figure, outcome) for figure in outcome.figures],
            "notes": outcome.notes,
        }
        for outcome in outcomes
    }


def shown(value: float, unit: str) -> str:
    """``value`` with as many digits as a person reads, and its unit."""
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f} {unit}"


def ratio_text(figure: Figure, outcome: Outcome) -> str:
    """The ratio in words, naming who did better: "replikv 1.20x faster"."""
    ratio = figure.ratio
    if ratio is None:
        return "(nothing to compare)"
    word = "faster" if figure.higher_is_better else "lower"
    if f"{ratio:.2f}" == "1.00":
        return "about equal"
    if ratio > 1:
        return f"{outcome.subject} {ratio:.2f}x {word}"
    return f"{outcome.baseline} {1 / ratio:.2f}x {word}"


def _wrapped(text: str, first: str) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=first, subsequent_indent=" " * 8, break_on_hyphens=False
    )


def render_table(outcomes: Sequence[Outcome]) -> list[str]:
    """A section per scenario: its title, then a row per measure, in columns aligned
    across the sections (figures to the right)."""
    sections: list[tuple[Outcome, list[tuple[str, str, str, str]]]] = []
    for outcome in outcomes:
        rows = [("measure", outcome.subject, outcome.baseline, "ratio")]
        for figure in outcome.figures:
            other = "-" if figure.other is None else shown(figure.other, figure.unit)
            ours = shown(figure.replikv, figure.unit)
            rows.append((figure.measure, ours, other, ratio_text(figure, outcome)))
        sections.append((outcome, rows))
    every_row = [row for _, rows in sections for row in rows]
    widths = [max(len(row[column]) for row in every_row) for column in range(3)]
    lines: list[str] = []
    for outcome, rows in sections:
        lines += ["", *_wrapped(f"{outcome.name}: {outcome.title}", "")]
        for measure, ours, other, ratio in rows:
            cells = [measure.ljust(widths[0]), ours.rjust(widths[1]), other.rjust(widths[2])]
            lines.append("  " + "  ".join([*cells, ratio]))
        for note in outcome.notes:
            lines += _wrapped(note, "  note: ")
    return lines
