"""``progress=True`` on the long calls: the bar's total, one final line in a terminal, and no
``IProgress not found`` warning in a Jupyter kernel without ipywidgets."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import replikv
from polling import eventually
from replikv import _progress

TIMEOUT = 60


class Recorder:
    """Stands in for ``ProgressBar``: records each bar's total and the counts it was given."""

    bars: list[Recorder]

    def __init__(self, description: str, total: int | None, unit: str = "rows") -> None:
        self.description, self.total, self.closed = description, total, False
        self.counts: list[int] = []
        Recorder.bars.append(self)

    def __call__(self, done: int) -> None:
        self.counts.append(done)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Recorder]]:
    Recorder.bars = []
    monkeypatch.setattr(_progress, "ProgressBar", Recorder)
    yield Recorder.bars


def test_put_many_bar_totals_len_of_the_rows(tmp_path: Path, bars: list[Recorder]) -> None:
    with replikv.Store(tmp_path / "db") as store:
        store.put_many("t", [(i, i) for i in range(20_000)], progress=True)
        store.put_many("t", ((i, i) for i in range(10)), progress=True)
    assert [(bar.total, bar.counts[-1], bar.closed) for bar in bars] == [
        (20_000, 20_000, True),
        (None, 10, True),  # a generator has no len(): no total
    ]


def test_put_dataframe_bar_totals_the_frames_rows(tmp_path: Path, bars: list[Recorder]) -> None:
    frame = pd.DataFrame({"id": range(20_000), "opens": range(20_000)})
    with replikv.Store(tmp_path / "db") as store:
        store.put_dataframe("t", frame, key="id", progress=True)
    [bar] = bars
    assert (bar.total, bar.counts[-1], bar.closed) == (20_000, 20_000, True)
    assert len(bar.counts) > 1  # it moves while the rows are encoded, not only at the end


@pytest.mark.parametrize("rows", [3, 20_000])  # committed at once, and streamed
@pytest.mark.parametrize("progress", [1, "yes"])
def test_a_progress_that_is_not_callable_is_refused_before_anything_is_written(
    tmp_path: Path, rows: int, progress: Any
) -> None:
    frame = pd.DataFrame({"id": range(rows), "opens": range(rows)})
    pairs = [(i, i) for i in range(rows)]
    with replikv.Store(tmp_path / "db") as store:
        loads: dict[str, Callable[[], object]] = {
            "put_many": lambda: store.put_many("t", pairs, progress=progress),
            "put_dataframe": lambda: store.put_dataframe("t", frame, key="id", progress=progress),
        }
        for name, load in loads.items():
            with pytest.raises(TypeError) as refused:
                load()
            assert str(refused.value) == (
                "progress must be True, False, None or a callable taking the count of rows so "
                f"far, not {type(progress).__name__}"
            )
            assert "t" not in store.tables(), name


def test_scrub_bar_totals_the_rows_it_checks(tmp_path: Path, bars: list[Recorder]) -> None:
    with replikv.Store(tmp_path / "db") as store:
        store.put_many("t", [(i, i) for i in range(500)])
        store.put_many("u", [(i, i) for i in range(200)])
        report = store.scrub(progress=True)
    [bar] = bars
    assert report.ok
    assert (bar.total, bar.counts[-1], bar.closed) == (700, 700, True)


def test_replica_wait_for_reports_seeding_then_catch_up(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    store = replikv.Store(tmp_path / "primary", segment_bytes=4096)
    try:
        with replikv.Primary(store, retain_bytes=8192, ship_interval=0.01) as primary:
            for batch in range(40):
                store.put_many("events", [(batch * 100 + i, {"n": i}) for i in range(100)])
            primary.retain()
            assert store.oldest_lsn > 1  # a new replica must be seeded from a snapshot
            path = tmp_path / "replica"
            with replikv.Replica(path, primary=primary.address, name="r") as replica:
                reached = replica.wait_for(
                    store.last_lsn, timeout=TIMEOUT, progress=lambda *c: calls.append(c)
                )
                assert reached
                # The snapshot's rows are visible before the link counts it as installed.
                eventually("the snapshot is counted", lambda: replica.status().snapshots == 1)
    finally:
        store.close()
    assert calls, "a wait reports at least once, at its end"
    assert {stage for stage, _, _ in calls} <= {"snapshot", "catch-up"}
    assert all(0 <= done <= total for _, done, total in calls)
    # A snapshot's total is its rows; the catch-up's the entries up to the LSN waited for.
    assert {total for stage, _, total in calls if stage == "snapshot"} <= {4_000}
    # The last report is complete: a snapshot that covered the LSN waited for ends on its
    # full row count, otherwise the catch-up ends on its last entry.
    stage, done, total = calls[-1]
    assert done == total
    assert stage == "catch-up" or total == 4_000


def test_replica_wait_for_progress_true_closes_its_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Staged] = []

    class Staged(_progress.StagedProgress):
        def __init__(self, description: str) -> None:
            super().__init__(description)
            self.closed = False
            made.append(self)

        def close(self) -> None:
            super().close()
            self.closed = True

    monkeypatch.setattr(_progress, "StagedProgress", Staged)
    store = replikv.Store(tmp_path / "primary")
    try:
        with replikv.Primary(store) as primary:
            store.put_many("t", [(i, i) for i in range(100)])
            with replikv.Replica(tmp_path / "r", primary=primary.address) as replica:
                assert replica.wait_for(store.last_lsn, timeout=TIMEOUT, progress=True)
    finally:
        store.close()
    assert [(bars._description, bars.closed) for bars in made] == [("replica r", True)]


def run_python(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=cwd,
    )


def test_the_text_bar_ends_with_one_final_line(tmp_path: Path) -> None:
    run = run_python(
        """
        import replikv
        with replikv.Store("db") as store:
            store.put_many("t", [(i, i) for i in range(30_000)], progress=True)
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    drawn = run.stderr.replace("\r", "\n").splitlines()
    finals = [line for line in drawn if "30000/30000" in line]
    assert len(finals) == 1, run.stderr
    assert run.stderr.endswith("\n")


def test_the_final_count_is_drawn_once_even_when_it_comes_late(tmp_path: Path) -> None:
    # A last count that arrives past tqdm's redraw interval (a long commit) used to draw the
    # final line, and close() drew it again.
    run = run_python(
        """
        import time
        from replikv._progress import ProgressBar
        bar = ProgressBar("load", 10)
        bar(5)
        time.sleep(0.2)
        bar(10)
        bar.close()
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    drawn = run.stderr.replace("\r", "\n").splitlines()
    assert len([line for line in drawn if "10/10" in line]) == 1, run.stderr


def test_a_notebook_without_ipywidgets_gets_the_text_bar_and_no_warning(tmp_path: Path) -> None:
    run = run_python(
        """
        import sys, types
        sys.modules["ipywidgets"] = None  # as if it were not installed
        sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")  # a kernel
        import replikv
        from replikv import _progress
        from tqdm.std import tqdm
        assert _progress._bar_class() is tqdm
        with replikv.Store("db") as store:
            store.put_many("t", [(i, i) for i in range(100)], progress=True)
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "IProgress" not in run.stderr
    assert "100/100" in run.stderr


def test_a_notebook_with_ipywidgets_gets_the_widget_bar(tmp_path: Path) -> None:
    run = run_python(
        """
        import importlib.machinery, sys, types
        widgets = types.ModuleType("ipywidgets")  # stands for an installed ipywidgets
        widgets.__spec__ = importlib.machinery.ModuleSpec("ipywidgets", None)
        sys.modules["ipywidgets"] = widgets
        sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")  # a kernel
        from replikv import _progress
        from tqdm.notebook import tqdm
        assert _progress._bar_class() is tqdm
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr


def test_a_terminal_gets_the_text_bar() -> None:
    from tqdm.std import tqdm

    assert "ipykernel.zmqshell" not in sys.modules
    assert _progress._bar_class() is tqdm
