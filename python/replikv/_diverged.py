"""Divergence reports: the entries a resync discarded, kept in a file, read back here.

A replica started with ``on_diverge="resync"`` whose history forks from its primary's (the
old primary's async writes that never shipped, say) writes every entry it holds from the
fork on to ``<its directory>/diverged/diverged-lsn<fork>-<ms>.rkvd`` before it re-seeds.
:func:`read_diverged` reads such a file back; :meth:`DivergenceReport.to_json_lines`
exports it, one JSON object per operation.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._core import Change, read_diverged_report
from ._html import render
from ._plain import to_json

__all__ = ["DivergenceReport", "read_diverged"]


@dataclass(frozen=True)
class DivergenceReport:
    """The entries a store held beyond a fork and discarded in a resync, in LSN order."""

    path: Path
    fork_lsn: int
    primary: str
    written_at: datetime.datetime
    entries: list[Change] = field(repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Change]:
        return iter(self.entries)

    @property
    def tables(self) -> dict[str, list[Any]]:
        """``{table: [key, ...]}``: the keys the discarded entries touched, first seen first."""
        touched: dict[str, dict[Any, None]] = {}
        for change in self.entries:
            for op in change.ops:
                touched.setdefault(op.table, {})[(type(op.key), op.key)] = None
        return {table: [key for _, key in keys] for table, keys in touched.items()}

    def __repr__(self) -> str:
        last = self.entries[-1].lsn if self.entries else self.fork_lsn - 1
        return (
            f"<DivergenceReport {len(self.entries)} entries (LSN {self.fork_lsn} to {last}) "
            f"diverged from {self.primary}, tables {sorted(self.tables)}>"
        )

    def _repr_html_(self) -> str:
        return render(self)

    def to_json_lines(self, path: str | os.PathLike[str]) -> int:
        """Writes one JSON object per operation to ``path``: ``lsn``, ``epoch``,
        ``timestamp`` (ISO 8601, UTC), ``table``, ``key``, ``op`` (``put``/``delete``) and
        ``value``, written as ``replikv changes`` writes them (bytes as ``{"$base64": ...}``,
        NaN as ``"NaN"``). Returns the number of lines."""
        lines = 0
        with open(path, "w", encoding="utf-8") as out:
            for change in self.entries:
                for op in change.ops:
                    row = {
                        "lsn": change.lsn,
                        "epoch": change.epoch,
                        "timestamp": change.timestamp.isoformat(),
                        "table": op.table,
                        "key": op.key,
                        "op": op.kind,
                        "value": op.value,
                    }
                    out.write(to_json(row) + "\n")
                    lines += 1
        return lines


def read_diverged(path: str | os.PathLike[str]) -> DivergenceReport:
    """Reads a divergence report file (every frame is checked: a damaged file raises
    ``CorruptionError``, never a partial report)."""
    fork_lsn, primary, written_at, entries = read_diverged_report(Path(path))
    return DivergenceReport(Path(path), fork_lsn, primary, written_at, entries)
