"""``replikv export`` and ``replikv import``: a table to and from JSON lines, CSV or parquet.

Both use one flat shape: a row is the key under ``--key``'s column name plus the fields of
its dict value (a value that is not a dict goes in a ``value`` column), so what ``export``
writes, ``import --key key`` reads back.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .._args import positive
from .._core import Store
from .._progress import ProgressBar
from .._store import Key
from .data import require_table
from .opening import USAGE, CommandError, open_store, run_command
from .render import RENDERING_HELP, csv_cell, from_json, to_json

FORMATS = ("jsonl", "csv", "parquet")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
NON_DICT_COLUMN = "value"
#: An integer key as text: digits, with a minus sign if negative.
_DECIMAL = re.compile(r"-?[0-9]+")
#: The largest CSV cell import reads: the largest value a store holds by default.
CSV_CELL_LIMIT = 64 << 20
#: Seconds a killed export's temporary file stays unwritten before another export removes it.
ABANDONED_AFTER = 60.0


def add_commands(commands: Any) -> None:
    """Adds ``export`` and ``import`` to the ``replikv`` subcommands."""
    export = commands.add_parser(
        "export",
        help="write a table as JSON lines, CSV or parquet",
        description="Write every row of TABLE, in key order, as one record: the key in the "
        "column --key-name, then the fields of the row's dict (a value that is not a dict "
        "goes in a 'value' column). Parquet needs pyarrow (pip install 'replikv[arrow]').",
        epilog=RENDERING_HELP,
    )
    export.add_argument("dir", type=Path, metavar="DIR", help="the store's directory")
    export.add_argument("table", metavar="TABLE", help="the table")
    export.add_argument(
        "--format", choices=FORMATS, default="jsonl", help="the file format to write"
    )
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write to FILE, which is replaced only once the export is complete "
        "(default: standard output; parquet needs a FILE)",
    )
    export.add_argument("--key-name", default="key", metavar="NAME", help="the key's column")
    export.set_defaults(run=run_command("export", _run_export))

    load = commands.add_parser(
        "import",
        help="load a JSON lines, CSV or parquet file into a table",
        description="Load the records of FILE into TABLE, keyed by the column --key; the "
        "other columns become each row's dict. The format comes from FILE's extension "
        "(.jsonl/.ndjson, .csv, .parquet). One transaction per --batch-rows rows: if a "
        "record is bad, the batches before it stay written and nothing of its batch is. "
        "CSV cells are stored as text (an empty cell as None). Rows with the same key store "
        "one row, the later's: the summary says how many rows added a key. The store is "
        "created if DIR holds none.",
        epilog=RENDERING_HELP,
    )
    load.add_argument("dir", type=Path, metavar="DIR", help="the store's directory")
    load.add_argument("table", metavar="TABLE", help="the table")
    load.add_argument("file", type=Path, metavar="FILE", help="the file to load")
    load.add_argument("--key", required=True, metavar="COLUMN", help="the key's column")
    load.add_argument(
        "--key-type",
        choices=("auto", "str", "int"),
        default="auto",
        help="auto keeps the file's type (CSV keys are text); int reads keys that spell an "
        "integer, str writes numbers as text; any other key is refused",
    )
    load.add_argument(
        "--batch-rows",
        type=positive,
        default=10_000,
        metavar="N",
        help="rows per transaction",
    )
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.set_defaults(run=run_command("import", _run_import))


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def _run_export(args: argparse.Namespace) -> int:
    if args.format == "parquet":
        pyarrow_parquet = _pyarrow_parquet()
        if args.output is None:
            raise CommandError("parquet is binary: give the file to write with -o FILE", USAGE)
    with open_store(args.dir) as store:
        require_table(store, args.table)
        if args.format == "parquet":
            table = store.table(args.table).to_arrow(key_name=args.key_name)
            with _replacing(args.output) as written:
                pyarrow_parquet.write_table(table, written)
            return 0
        with _output(args.output) as out:
            records = _records(store, args.table, args.key_name)
            if args.format == "jsonl":
                for record in records:
                    out.write(to_json(record) + "\n")
            else:
                columns = _columns(store, args.table, args.key_name)
                writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
                writer.writeheader()
                for record in records:
                    writer.writerow({name: csv_cell(cell) for name, cell in record.items()})
    return 0


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet
    except ImportError:
        raise CommandError(
            "parquet needs pyarrow, which is not installed: pip install 'replikv[arrow]'"
        ) from None
    return pyarrow.parquet


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    with _replacing(path) as written, written.open("w", encoding="utf-8", newline="") as out:
        yield out


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A new file to write in ``path``'s stead: it becomes ``path`` only if the block ends
    without an error, and is removed if it does not, so a failed or interrupted export
    leaves the previous file whole rather than empty or cut short."""
    if path.exists() and not path.is_file():
        yield path  # a device or a pipe (-o /dev/stdout) is written as it is, never replaced
        return
    target = Path(os.path.realpath(path))  # through a symlink: replace the file, keep the link
    _remove_abandoned_beside(target)
    written = _new_file_beside(target)
    try:
        if target.exists():
            shutil.copymode(target, written)  # as writing in place kept it
        yield written
        os.replace(written, target)
    except BaseException:  # Ctrl-C too
        written.unlink(missing_ok=True)
        raise


def _partial_prefix(path: Path) -> str:
    """How the names of the files written in ``path``'s stead begin on this host; the
    writer's pid follows."""
    return f".{path.name}.{socket.gethostname()}."


def _remove_abandoned_beside(path: Path) -> None:
    """Removes the files that exports to ``path`` by processes of this host that no longer
    run left beside it: an export killed (kill -9, a power loss) never removes its own, and
    each was as large as the export got. Only files unwritten for a minute: a process of
    another PID namespace (a container with this host's name) may be writing one."""
    prefix = _partial_prefix(path)
    named = re.compile(re.escape(prefix) + r"([0-9]{1,10})\.[0-9a-f]{8}\.partial")
    for left in path.parent.glob(f"{glob.escape(prefix)}*.partial"):
        match = named.fullmatch(left.name)
        with contextlib.suppress(FileNotFoundError):
            idle = time.time() - left.stat().st_mtime > ABANDONED_AFTER
            if match and idle and not _runs(int(match[1])):
                left.unlink()


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or pid)
        return False
    except PermissionError:  # another user's process: it runs
        pass
    return True


def _new_file_beside(path: Path) -> Path:
    """A new, empty, hidden file in ``path``'s directory (a rename within one file system is
    atomic), created as ``open()`` creates a file: its mode is what the umask allows. Its
    name says which process on which host writes it (see ``_remove_abandoned_beside``)."""
    while True:
        token = secrets.token_hex(4)
        candidate = path.with_name(f"{_partial_prefix(path)}{os.getpid()}.{token}.partial")
        try:
            candidate.open("x").close()
        except FileExistsError:
            continue
        except OSError as failure:  # the temporary file's name would only confuse
            raise CommandError(f"cannot write {path}: {failure.strerror}") from None
        return candidate


def _records(store: Store, table: str, key_name: str) -> Iterator[dict[str, Any]]:
    """Each row as one flat record (the module docstring says how)."""
    for key, value in store.scan(table):
        fields = value if isinstance(value, dict) else {NON_DICT_COLUMN: value}
        if key_name in fields:
            # Exit code 1, as parquet's refusal of the same table and import's of a file
            # without its --key column: the command line is right, the data does not fit it.
            raise CommandError(
                f"the row {key!r} has a field named {key_name!r}: "
                "give the key another column name with --key-name"
            )
        yield {key_name: key, **fields}


def _columns(store: Store, table: str, key_name: str) -> list[str]:
    """Every column of the table's records, in the order they first appear."""
    seen: dict[str, None] = {key_name: None}
    for _, value in store.scan(table):
        seen.update(dict.fromkeys(value if isinstance(value, dict) else (NON_DICT_COLUMN,)))
    return list(seen)


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------


def _run_import(args: argparse.Namespace) -> int:
    file_format = SUFFIXES.get(args.file.suffix.lower())
    if file_format is None:
        known = ", ".join(SUFFIXES)
        raise CommandError(
            f"cannot tell the format of {args.file}: its name must end in one of {known}", USAGE
        )
    if not args.file.is_file():
        raise CommandError(f"no file {args.file}")
    if file_format == "parquet":
        pyarrow_parquet = _pyarrow_parquet()
    with open_store(args.dir, create=True) as store:
        held_before = store.count(args.table)
        if file_format == "parquet":
            data = pyarrow_parquet.read_table(args.file)
            if args.key_type != "auto":
                data = _cast_key(data, args.key, args.key_type)
            store.put_arrow(
                args.table,
                data,
                key=args.key,
                batch_rows=args.batch_rows,
                progress=not args.quiet,
            )
            loaded = data.num_rows
        else:
            loaded = _load_text(store, args, file_format)
        lsn = store.last_lsn
        new_keys = store.count(args.table) - held_before
    print(f"imported {loaded:,} rows into {args.table!r} (last LSN {lsn:,})", file=sys.stderr)
    if new_keys < loaded:
        # Two rows of one key store one row, the later's: say so, or "imported 2 rows"
        # for a table that gained one reads as both kept. The counts are the tables'
        # own, so this costs nothing however large the file.
        replaced = loaded - new_keys
        print(
            f"{new_keys:,} of them added a key; {replaced:,} replaced the value of a key "
            "already written, earlier in the file or before the import (the later row wins)",
            file=sys.stderr,
        )
    return 0


def _cast_key(data: Any, key: str, key_type: str) -> Any:
    import pyarrow

    if key not in data.column_names:
        return data  # put_arrow names the columns there are
    target = pyarrow.int64() if key_type == "int" else pyarrow.string()
    index = data.column_names.index(key)
    return data.set_column(index, key, data.column(key).cast(target))


def _load_text(store: Store, args: argparse.Namespace, file_format: str) -> int:
    """Loads a JSON lines or CSV file in batches; returns the rows loaded."""
    bar = None
    if not args.quiet:  # the total costs a read of the file: only for a bar
        total = _count_lines(args.file) - (1 if file_format == "csv" else 0)
        bar = ProgressBar(f"import {args.table}", max(total, 0))
    loaded = 0
    try:
        # "utf-8-sig" skips the byte order mark Excel's "CSV UTF-8" (and some JSON
        # writers) put first: read as text, it becomes part of the first column's name.
        with args.file.open(encoding="utf-8-sig", newline="") as source:
            records = _json_lines(source) if file_format == "jsonl" else _csv_records(source)
            batch: list[tuple[Key, Any]] = []
            for where, record in records:
                batch.append(_row(record, args.key, args.key_type, where))
                if len(batch) == args.batch_rows:
                    loaded += _commit(store, args.table, batch, loaded, bar)
            if batch:
                loaded += _commit(store, args.table, batch, loaded, bar)
    except (CommandError, TypeError, ValueError) as failure:
        if loaded:
            failure.args = (f"{failure.args[0]} ({loaded:,} rows before its batch are written)",)
        raise
    finally:
        if bar is not None:
            bar.close()
    return loaded


def _commit(
    store: Store, table: str, batch: list[tuple[Key, Any]], before: int, bar: ProgressBar | None
) -> int:
    store.put_many(table, batch)
    count = len(batch)
    batch.clear()
    if bar is not None:
        bar(before + count)
    return count


def _count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


def _json_lines(source: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            record = from_json(line)
        except ValueError as bad:
            raise CommandError(f"line {number} is not JSON: {bad}") from None
        if not isinstance(record, dict):
            raise CommandError(f"line {number} is not a JSON object")
        yield f"line {number}", record


def _csv_records(source: IO[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    # The csv module refuses cells over 128 KiB by default; a stored value may be larger
    # (export writes it whole), and the store's own limits refuse what it cannot hold.
    csv.field_size_limit(max(csv.field_size_limit(), CSV_CELL_LIMIT))
    reader = csv.DictReader(source)
    try:
        # A repeated header would keep only its last column's cells, silently.
        header = reader.fieldnames or []
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            names = ", ".join(repr(name) for name in repeated)
            raise CommandError(f"the header names {names} more than once: rename the copies")
        for record in reader:
            if None in record:
                raise CommandError(f"line {reader.line_num} has more cells than the header")
            cells = {name: cell or None for name, cell in record.items()}
            yield f"line {reader.line_num}", cells
    except csv.Error as err:
        raise CommandError(f"line {reader.line_num} is not CSV: {err}") from None


def _row(record: dict[str, Any], key_column: str, key_type: str, where: str) -> tuple[Key, Any]:
    if key_column not in record:
        columns = ", ".join(record) or "none"
        raise CommandError(f"{where} has no column {key_column!r} (its columns: {columns})")
    key = record.pop(key_column)
    if key_type == "int" and isinstance(key, str):
        # Text that spells an integer as export writes one (CSV cells are text): never a
        # float cut to an int, nor what int() forgives (" 12", "+5", "1_000"), which would
        # merge keys that differ as text.
        if not _DECIMAL.fullmatch(key):
            raise CommandError(f"{where}: the key {key!r} is not an integer")
        key = int(key)
    elif key_type == "str" and isinstance(key, int | float) and not isinstance(key, bool):
        key = str(key)  # a JSON number under --key-type str: its text (bytes stay refused)
    wanted: tuple[type, ...] = {"int": (int,), "str": (str,)}.get(key_type, (str, bytes, int))
    if isinstance(key, bool) or not isinstance(key, wanted) or not isinstance(key, Key):
        kinds = {"int": "an integer", "str": "text"}.get(key_type, "text, an integer or bytes")
        raise CommandError(
            f"{where}: the key {key!r} is a {type(key).__name__}; with --key-type {key_type} "
            f"a key must be {kinds}"
        )
    return key, record
