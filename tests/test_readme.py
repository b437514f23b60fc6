"""The README's ```python blocks run, in order, in one namespace, in a fresh working
directory, so that the guide cannot rot. What is not meant to run (a shell session, a
fragment with made-up addresses) is fenced with another language (```sh, ```py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import replikv

README = Path(__file__).parent.parent / "README.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: What a block may leave open, closed in this order if a block fails before the guide's
#: own last block closes them (caches and replicas before the primaries they follow).
CLOSABLE = (replikv.Cache, replikv.CacheNode, replikv.Replica, replikv.Primary, replikv.Store)


def python_blocks() -> list[tuple[int, str]]:
    """Each ```python block of the README with the line its code starts on."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


def test_the_readme_guide_has_python_blocks() -> None:
    assert len(python_blocks()) >= 7


def test_the_readmes_python_blocks_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for line, code in python_blocks():
            # Padding the code to its line makes a traceback name the README's line.
            exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)
    finally:
        for kind in CLOSABLE:
            for value in namespace.values():
                if isinstance(value, kind):
                    value.close()
