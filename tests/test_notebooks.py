"""Every notebook under notebooks/ runs top to bottom without an error."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# Something each notebook must show when it ran through.
EXPECTED = {
    "quickstart.ipynb": "Receipt(lsn=",
    "replicas.ipynb": "replica stores are read-only",
}
NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_every_notebook_has_an_expectation() -> None:
    assert NOTEBOOKS, "notebooks/ should hold at least one notebook"
    assert {p.name for p in NOTEBOOKS} == set(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors_and_removes_its_files(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    resources = {"metadata": {"path": str(tmp_path / "cwd")}}
    (tmp_path / "cwd").mkdir()
    # The kernel inherits TMPDIR: whatever the notebook puts in a temporary directory lands
    # here, and must be gone once it ran (each run used to leave a store behind in /tmp).
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources=resources)
    client.execute()
    assert not list(scratch.glob("replikv-*")), "the notebook left its files behind"
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    texts = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    streams = "".join(str(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    assert EXPECTED[path.name] in texts + streams
