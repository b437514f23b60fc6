"""DataFrames and Arrow: a table to pandas, a DataFrame into a table, and a DuckDB query
over ``to_arrow()``, each next to what a user would otherwise write, in the same run.

Run it from the repository with the package installed (``replikv`` importable)::

    python benches/bench_frames.py            # 1M rows, a few minutes on 2 cores
    python benches/bench_frames.py --quick    # 20k rows, a smoke run

Every ratio compares two figures of this run; the targets come from issue 10 ("Speed").
Rows are subscriber profiles: a 16-byte key and 6 fields (str, int, float, bool, str,
aware datetime). This script never fails on a timing.

Scenarios:
  out     ``table.to_pandas()`` vs ``pd.DataFrame(list(table.values()))`` and vs
          ``pd.read_sql`` of the same rows from sqlite3 (one column per field)
  in      ``store.put_dataframe`` vs ``df.to_sql`` into sqlite3 (WAL) and vs a Python loop
          over ``df.to_dict("records")`` into ``put_many``
  query   DuckDB ``group by`` over ``to_arrow()`` vs the same query in sqlite3
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb
import pandas as pd
import replikv
from bench_store import Report, bench_parser, fmt_runs, scratch, section, show
from replikv._measure import timed

SCENARIOS = ("out", "in", "query")
OUT_VS_LOOP_TARGET = 10.0  # times faster than pd.DataFrame(list(table.values()))
OUT_VS_SQL_TARGET = 2.0  # times faster than pd.read_sql from sqlite3
IN_VS_SQL_TARGET = 2.0  # times faster than df.to_sql into sqlite3
IN_VS_LOOP_TARGET = 5.0  # times faster than to_dict("records") into put_many
QUERY = "select country, count(*) as n, avg(score) as score from {table} group by country"


@dataclass(frozen=True)
class Config:
    """Counts for one run; ``--quick`` shrinks them for a smoke run."""

    rows: int = 1_000_000
    reps: int = 3


QUICK = Config(rows=20_000, reps=1)


def profiles(n: int) -> Any:
    """``n`` subscriber profiles, built column-wise."""
    start = pd.Timestamp("2024-01-01", tz="UTC")
    ids = pd.RangeIndex(n)
    return pd.DataFrame(
        {
            "email": [f"u{i:013d}@x" for i in range(n)],
            "name": [f"User {i % 100_000}" for i in range(n)],
            "age": (ids % 60 + 18).astype("int64"),
            "score": ids % 1000 / 7.0,
            "opted_in": ids % 3 != 0,
            "country": pd.Series(["fr", "de", "es", "it", "pl"] * (n // 5 + 1))[:n].to_numpy(),
            "signed_up": start + pd.to_timedelta(ids % 100_000, unit="min"),
        }
    )


def sqlite_table(path: Path) -> sqlite3.Connection:
    """A file database in WAL mode with ``synchronous=FULL``, as bench_store opens it."""
    conn = sqlite3.connect(str(path))
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=full")
    return conn


def medians(figures: dict[str, list[float]]) -> dict[str, float]:
    for name, values in figures.items():
        show(name, fmt_runs(values, "s", 3))
    return {name: statistics.median(values) for name, values in figures.items()}


def rounds(cfg: Config, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Seconds of each run, interleaved over ``cfg.reps`` rounds so drift weighs on all."""
    figures: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(cfg.reps):
        for name, run in runs.items():
            figures[name].append(timed(run))
    return medians(figures)


def bench_out(base: Path, cfg: Config, report: Report) -> None:
    section(f"out: {cfg.rows:,} rows of 6-field dicts to a pandas DataFrame")
    df = profiles(cfg.rows)
    with scratch(base, "out") as path, replikv.Store(path / "db") as store:
        store.put_dataframe("subs", df, key="email")
        conn = sqlite_table(path / "sqlite.db")
        df.to_sql("subs", conn, index=False)
        conn.commit()
        table = store.table("subs")
        figures = rounds(
            cfg,
            {
                "table.to_pandas()": table.to_pandas,
                "pd.DataFrame(list(table.values()))": lambda: pd.DataFrame(list(table.values())),
                "pd.read_sql (sqlite3)": lambda: pd.read_sql("select * from subs", conn),
            },
        )
        conn.close()
    ours = figures["table.to_pandas()"]
    report.compare(
        "to_pandas vs DataFrame(values())",
        ours,
        figures["pd.DataFrame(list(table.values()))"],
        "s",
        "values() loop",
        OUT_VS_LOOP_TARGET,
        kind="faster",
    )
    report.compare(
        "to_pandas vs pd.read_sql",
        ours,
        figures["pd.read_sql (sqlite3)"],
        "s",
        "sqlite3",
        OUT_VS_SQL_TARGET,
        kind="faster",
    )


def bench_in(base: Path, cfg: Config, report: Report) -> None:
    section(f"in: a DataFrame of {cfg.rows:,} rows into a table (one transaction)")
    df = profiles(cfg.rows)
    figures: dict[str, list[float]] = {
        "put_dataframe": [],
        "df.to_sql (sqlite3 WAL)": [],
        "to_dict loop + put_many": [],
    }
    for rep in range(cfg.reps):
        with scratch(base, f"in{rep}") as path:
            with replikv.Store(path / "a") as store:
                figures["put_dataframe"].append(
                    timed(lambda: store.put_dataframe("subs", df, key="email"))
                )
            conn = sqlite_table(path / "sqlite.db")

            def to_sql(conn: sqlite3.Connection = conn) -> None:
                df.to_sql("subs", conn, index=False)
                conn.commit()

            figures["df.to_sql (sqlite3 WAL)"].append(timed(to_sql))
            conn.close()
            with replikv.Store(path / "b") as store:

                def loop(store: replikv.Store = store) -> None:
                    records = df.to_dict("records")
                    store.put_many(
                        "subs",
                        (
                            (r.pop("email"), {**r, "signed_up": r["signed_up"].to_pydatetime()})
                            for r in records
                        ),
                    )

                figures["to_dict loop + put_many"].append(timed(loop))
    med = medians(figures)
    report.compare(
        "put_dataframe vs df.to_sql",
        med["put_dataframe"],
        med["df.to_sql (sqlite3 WAL)"],
        "s",
        "sqlite3",
        IN_VS_SQL_TARGET,
        kind="faster",
    )
    report.compare(
        "put_dataframe vs to_dict loop",
        med["put_dataframe"],
        med["to_dict loop + put_many"],
        "s",
        "loop",
        IN_VS_LOOP_TARGET,
        kind="faster",
    )


def bench_query(base: Path, cfg: Config, report: Report) -> None:
    section(f"query: group by over {cfg.rows:,} rows (DuckDB over to_arrow vs sqlite3)")
    df = profiles(cfg.rows)
    with scratch(base, "query") as path, replikv.Store(path / "db") as store:
        store.put_dataframe("subs", df, key="email")
        conn = sqlite_table(path / "sqlite.db")
        df.to_sql("subs", conn, index=False)
        conn.commit()
        table = store.table("subs")

        def ours() -> object:
            subs = table.to_arrow_batches(columns=["country", "score"])  # noqa: F841
            relation = duckdb.sql(QUERY.format(table="subs"))
            assert relation is not None
            return relation.fetchall()

        figures = rounds(
            cfg,
            {
                "duckdb over to_arrow_batches()": ours,
                "sqlite3": lambda: conn.execute(QUERY.format(table="subs")).fetchall(),
            },
        )
        conn.close()
    report.compare(
        "DuckDB on to_arrow vs sqlite3",
        figures["duckdb over to_arrow_batches()"],
        figures["sqlite3"],
        "s",
        "sqlite3",
        None,
        kind="faster",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_parser(__doc__, SCENARIOS).parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else Config()
    print(f"replikv {replikv.__version__}; pandas {pd.__version__}; duckdb {duckdb.__version__}")
    benches: dict[str, Callable[[Path, Config, Report], None]] = {
        "out": bench_out,
        "in": bench_in,
        "query": bench_query,
    }
    report = Report()
    base = Path(args.dir)
    for name in SCENARIOS:
        if args.only is None or args.only == name:
            benches[name](base, cfg, report)
    report.print_summary(issue="issue 10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
