"""HTML tables for Jupyter: every ``_repr_html_`` of replikv's classes is :func:`render`.

Each object becomes a title, a two-column table of its figures and, where it has rows
(tables of a store, replicas of a primary, nodes of a cache), a table of them. Every
string that comes from users or peers (names, paths, keys, errors) is escaped.
"""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .exceptions import ReplikvError

__all__ = ["render"]

# How many keys a divergence report lists per table before it says "and N more".
_KEYS_SHOWN = 10


def size_text(count: int) -> str:
    """``count`` bytes in B, KiB, MiB or GiB (tables here and ``replikv ls``)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{count:,} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _cell(value: Any) -> str:
    """One value as escaped text: thousands separators, three decimals, ISO times."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = "unknown" if math.isnan(value) else f"{value:,.3f}"
    elif isinstance(value, datetime.datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    else:
        text = str(value)
    return html.escape(text)


def _rows(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table with a header row."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, figures: Sequence[tuple[str, Any]], *sections: tuple[str, str]) -> str:
    """A bold title, the figures as a two-column table, then titled sections (HTML)."""
    parts = [f"<div><strong>{html.escape(title)}</strong>"]
    if figures:
        body = "".join(
            f'<tr><th style="text-align:left">{html.escape(name)}</th><td>{_cell(value)}</td></tr>'
            for name, value in figures
        )
        parts.append(f"<table><tbody>{body}</tbody></table>")
    for heading, content in sections:
        if heading:
            parts.append(f"<p>{html.escape(heading)}</p>")
        parts.append(content)
    parts.append("</div>")
    return "".join(parts)


def _unavailable(title: str, problem: Exception) -> str:
    return _page(title, [("state", str(problem))])


def _store_stats(stats: Any, title: str, extra: Sequence[tuple[str, Any]] = ()) -> str:
    tables = _rows(("table", "rows"), sorted(stats.tables.items()))
    figures = [
        ("path", stats.path),
        ("last LSN", stats.last_lsn),
        *extra,
        ("oldest LSN in the log", stats.oldest_lsn),
        ("oldest entry written", stats.oldest_time),
        ("rows", sum(stats.tables.values())),
        ("disk use", size_text(stats.total_bytes)),
        ("log files", size_text(stats.log_bytes)),
        ("tables file", size_text(stats.tables_bytes)),
        ("other files", size_text(stats.other_bytes)),
    ]
    return _page(title, figures, (f"{len(stats.tables)} table(s)", tables))


def _store(store: Any) -> str:
    title = f"{type(store).__name__} {store.path}"
    try:
        if store.closed:
            return _page(title, [("state", "closed")])
        stats = store.stats()
        extra = [("epoch", store.epoch), ("read-only", store.read_only)]
    except (ReplikvError, OSError) as problem:
        return _unavailable(title, problem)
    return _store_stats(stats, title, extra)


_REPLICA_HEADER = (
    "name",
    "kind",
    "address",
    "state",
    "sync",
    "sent LSN",
    "acked LSN",
    "lag (entries)",
    "lag (s)",
    "lag (bytes)",
    "last seen",
)


def _replica_row(info: Any) -> tuple[Any, ...]:
    return (
        info.name,
        info.kind,
        info.address,
        info.state,
        info.sync_state,
        info.sent_lsn,
        info.acked_lsn,
        info.lag_lsn,
        info.lag_seconds,
        size_text(info.lag_bytes),
        info.last_seen,
    )


def _primary_status(status: Any, title: str | None = None) -> str:
    figures = [
        ("last LSN", status.last_lsn),
        ("epoch", status.epoch),
        ("sync writes", status.sync_state),
        ("refused connections", status.rejected),
    ]
    if status.last_rejection is not None:
        figures.append(("last refusal", status.last_rejection))
    replicas = (
        _rows(_REPLICA_HEADER, (_replica_row(info) for info in status.replicas))
        if status.replicas
        else "<p>no replica has connected</p>"
    )
    return _page(
        title or f"PrimaryStatus {status.address}",
        figures,
        (f"{len(status.replicas)} replica(s)", replicas),
    )


def _primary(primary: Any) -> str:
    title = f"Primary {primary.address}"
    if primary.closed:
        return _page(title, [("state", "closed")])
    try:
        status = primary.status()
    except (ReplikvError, OSError) as problem:
        return _unavailable(title, problem)
    return _primary_status(status, title)


def _replica_info(info: Any) -> str:
    return _page(f"ReplicaInfo {info.name}", [], ("", _rows(_REPLICA_HEADER, [_replica_row(info)])))


def _divergence(account: dict[str, Any] | None) -> str | None:
    """A fork's loss account in one line, or ``None``."""
    if account is None:
        return None
    line = (
        f"{account['entries']:,} entries from LSN {account['fork_lsn']:,} to "
        f"{account['last_lsn']:,}, tables {', '.join(sorted(account['tables'])) or 'none'}"
    )
    report = account.get("report")
    return f"{line}; kept in {report}" if report else line


def _replica_status(status: Any, title: str | None = None) -> str:
    progress = status.snapshot_progress
    figures = [
        ("primary", status.primary),
        ("state", status.state),
        ("applied LSN", status.applied_lsn),
        ("flushed LSN", status.flushed_lsn),
        ("primary's last LSN", status.primary_last_lsn),
        ("lag (entries)", status.lag_lsn),
        ("lag (s)", status.lag_seconds),
        ("epoch", status.epoch),
        ("primary's quorum", status.primary_quorum),
        ("members", status.primary_members),
        ("connections", status.connections),
        ("snapshots installed", status.snapshots),
        (
            "snapshot progress",
            None if progress is None else f"{progress[0]:,} of {progress[1]:,} rows",
        ),
        ("last error", status.last_error),
        ("diverged", _divergence(status.diverged)),
        ("resyncs", status.resyncs),
        ("last resync", _divergence(status.last_resync)),
    ]
    peers = _rows(("name", "address"), status.primary_peers)
    sections = [("members it can reach for a promotion", peers)] if status.primary_peers else []
    return _page(title or f"ReplicaStatus {status.name}", figures, *sections)


def _replica(replica: Any) -> str:
    title = f"Replica {replica.name}"
    try:
        if replica.store.closed:
            return _page(title, [("state", "closed")])
        status = replica.status()
    except (ReplikvError, OSError) as problem:
        return _unavailable(title, problem)
    return _replica_status(status, title)


def _slot(slot: Any) -> str:
    figures = [("acked LSN", slot.acked_lsn), ("created", slot.created), ("fsync", slot.fsync)]
    return _page(f"Slot {slot.name}", figures)


def _cache_stats(stats: Any, title: str = "CacheStats") -> str:
    figures = [
        ("hit ratio", f"{stats.hit_ratio:.1%}"),
        ("hits", stats.hits),
        ("misses", stats.misses),
        ("keys", stats.keys),
        ("evictions", stats.evictions),
        ("expirations", stats.expirations),
        ("invalidations", stats.invalidations),
        ("stale fills refused", stats.stale_fills_refused),
        ("loads from the source", stats.loads),
        ("loads shared with another reader", stats.loads_coalesced),
        ("seconds loading", stats.load_seconds),
        ("errors", stats.errors),
        ("last error", stats.last_error),
    ]
    if not stats.nodes:
        return _page(title, figures)
    header = ("node", "state", "keys", "hits", "misses", "evictions", "processed LSN", "errors")
    fields = ("state", "keys", "hits", "misses", "evictions", "processed_lsn", "errors")
    nodes = _rows(
        (*header, "last error"),
        (
            (address, *(node.get(field) for field in fields), node.get("last_error"))
            for address, node in sorted(stats.nodes.items())
        ),
    )
    return _page(title, figures, (f"{len(stats.nodes)} node(s)", nodes))


def _cache(cache: Any) -> str:
    title = repr(cache).strip("<>")
    try:
        stats = cache.stats()
    except (ReplikvError, OSError) as problem:
        return _unavailable(title, problem)
    return _cache_stats(stats, title)


def _node_stats(stats: Any, title: str | None = None) -> str:
    figures = [
        ("hit ratio", f"{stats.hit_ratio:.1%}"),
        ("hits", stats.hits),
        ("misses", stats.misses),
        ("keys", stats.keys),
        ("bytes", size_text(stats.bytes)),
        ("evictions", stats.evictions),
        ("expirations", stats.expirations),
        ("invalidations", stats.invalidations),
        ("stale fills refused", stats.stale_fills_refused),
        ("flushes", stats.flushes),
        ("follows the log", stats.follow_state),
        ("processed LSN", stats.processed_lsn),
        ("processed epoch", stats.processed_epoch),
        ("log lost", stats.log_lost),
        ("forks", stats.forks),
        ("last error", stats.last_error),
        ("clients", stats.clients),
    ]
    return _page(title or f"CacheNodeStats {stats.address}", figures)


def _cache_node(node: Any) -> str:
    title = f"CacheNode {node.address}"
    if node.closed:
        return _page(title, [("state", "closed")])
    try:
        stats = node.stats()
    except (ReplikvError, OSError) as problem:
        return _unavailable(title, problem)
    return _node_stats(stats, title)


_VERIFY_HEADER = (
    "replica",
    "verdict",
    "LSN",
    "table",
    "table verdict",
    "primary rows",
    "replica rows",
)


def _verify_rows(replica: Any) -> list[tuple[Any, ...]]:
    """One row per table of a replica's comparison (one row with the reason if none)."""
    described = replica.to_dict()
    tables = described["tables"]
    if not tables:
        return [(replica.name, replica.verdict, replica.lsn, replica.reason, None, None, None)]
    return [
        (
            replica.name,
            replica.verdict,
            replica.lsn,
            table,
            row["verdict"],
            row["primary_rows"],
            row["replica_rows"],
        )
        for table, row in sorted(tables.items())
    ]


def _verify_report(report: Any) -> str:
    rows = [row for replica in report.replicas for row in _verify_rows(replica)]
    figures = [
        ("verdict", "ok" if report.ok else "DIFFERENT"),
        ("primary's LSN", report.lsn),
        ("replicas compared", report.compared),
    ]
    table = _rows(_VERIFY_HEADER, rows) if rows else "<p>no replica to compare</p>"
    return _page("VerifyReport", figures, (f"{len(report.replicas)} replica(s)", table))


def _replica_verify(replica: Any) -> str:
    return _page(
        f"ReplicaVerify {replica.name}", [], ("", _rows(_VERIFY_HEADER, _verify_rows(replica)))
    )


def _promotion(promotion: Any) -> str:
    loss = promotion.possible_loss
    figures = [
        ("epoch", promotion.epoch),
        ("start LSN", promotion.start_lsn),
        ("members reached", ", ".join(promotion.reached)),
        ("members needed", promotion.needed),
        ("forced", promotion.forced),
        ("possible loss", "none" if loss is None else f"LSN {loss[0]:,} to {loss[1]:,}"),
    ]
    return _page("Promotion", figures)


def _divergence_report(report: Any) -> str:
    last = report.entries[-1].lsn if report.entries else report.fork_lsn - 1
    figures = [
        ("file", str(report.path)),
        ("diverged from", report.primary),
        ("written at", report.written_at),
        ("entries", len(report.entries)),
        ("LSNs", f"{report.fork_lsn:,} to {last:,}"),
    ]
    touched = []
    for table, keys in report.tables.items():
        shown = ", ".join(repr(key) for key in keys[:_KEYS_SHOWN])
        if len(keys) > _KEYS_SHOWN:
            shown += f", and {len(keys) - _KEYS_SHOWN:,} more"
        touched.append((table, len(keys), shown))
    keys = _rows(("table", "keys", "keys touched"), touched)
    return _page("DivergenceReport", figures, ("keys the discarded entries touched", keys))


def _scrub_report(report: Any) -> str:
    figures = [
        ("verdict", "ok" if report.ok else "DAMAGED"),
        ("path", report.path),
        ("LSN checked", report.lsn),
        ("rows checked", report.rows_checked),
    ]
    tables = _rows(("table", "rows checked"), sorted(report.tables.items()))
    sections = [("tables", tables)]
    if report.damaged:
        damage = [(d.table, d.key, d.reason) for d in report.damaged]
        sections.append((f"{len(damage)} problem(s)", _rows(("table", "key", "reason"), damage)))
    return _page("ScrubReport", figures, *sections)


def _switchover(switched: Any) -> str:
    figures = [
        ("primary now", switched.to),
        ("serving at", switched.address),
        ("epoch", switched.epoch),
        ("old primary's last LSN", switched.last_lsn),
        ("writes paused", f"{switched.paused * 1000:.1f} ms"),
    ]
    return _page("Switchover", figures)


_RENDERERS: dict[str, Callable[[Any], str]] = {
    "Store": _store,
    "StoreStats": lambda stats: _store_stats(stats, f"StoreStats {stats.path}"),
    "Primary": _primary,
    "PrimaryStatus": _primary_status,
    "ReplicaInfo": _replica_info,
    "Replica": _replica,
    "ReplicaStatus": _replica_status,
    "Slot": _slot,
    "Cache": _cache,
    "CacheStats": _cache_stats,
    "CacheNode": _cache_node,
    "CacheNodeStats": _node_stats,
    "VerifyReport": _verify_report,
    "ReplicaVerify": _replica_verify,
    "Promotion": _promotion,
    "DivergenceReport": _divergence_report,
    "ScrubReport": _scrub_report,
    "Switchover": _switchover,
}


def render(obj: Any) -> str:
    """The HTML Jupyter shows for ``obj`` (one of replikv's classes, or a subclass)."""
    for cls in type(obj).__mro__:
        renderer = _RENDERERS.get(cls.__name__)
        if renderer is not None:
            return renderer(obj)
    return f"<pre>{html.escape(repr(obj))}</pre>"
