"""Every notebook under notebooks/ runs top to bottom without an error (on small data), shows
what it promises (its plots among it), removes its files, and is stored without outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

# Per notebook: a text it must print once it ran through, and how many plots it draws.
EXPECTED = {
    "01_quickstart.ipynb": (": delete None", 1),
    "02_replication.ipynb": ("confirmed consent writes lost: 0 of", 2),
    "03_caching.ipynb": ("after put: {'name': 'User 1', 'newsletter': False", 2),
}
NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def read(path: Path) -> Any:
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


def test_every_notebook_has_an_expectation() -> None:
    assert NOTEBOOKS, "notebooks/ should hold at least one notebook"
    assert {p.name for p in NOTEBOOKS} == set(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    code = [cell for cell in read(path).cells if cell.cell_type == "code"]
    assert code
    assert [(c.execution_count, c.outputs) for c in code] == [(None, [])] * len(code), (
        f"{path.name} holds outputs: clear them before committing"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_on_small_data_and_removes_its_files(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = read(path)
    resources = {"metadata": {"path": str(tmp_path / "cwd")}}
    (tmp_path / "cwd").mkdir()
    # The kernel inherits the environment: TMPDIR puts whatever the notebook keeps in a
    # temporary directory here, where it must be gone once it ran.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setenv("REPLIKV_NOTEBOOK_SMALL", "1")
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources=resources)
    client.execute()
    assert not list(scratch.glob("replikv-*")), "the notebook left its files behind"
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    texts = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    streams = "".join(str(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    text, plots = EXPECTED[path.name]
    assert text in texts + streams
    assert sum("image/png" in o.get("data", {}) for o in outputs) == plots
