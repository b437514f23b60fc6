"""Keeps the docstrings of ``python/replikv/_core.pyi`` equal to those ``help()`` shows.

The Rust doc comments of the extension are the one source: ``help(replikv.Store.put)`` shows
them, and editors and type checkers read the stub. ``python dev/stub_docs.py`` rewrites the
stub's docstrings from the built extension; ``--check`` only reports differences, and
``tests/test_docs.py`` runs that check. A stub member whose runtime object has no docstring is
reported: give it a Rust doc comment (``///`` on the method, or on the field of a
``get_all`` class).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

STUB = Path(__file__).resolve().parent.parent / "python" / "replikv" / "_core.pyi"
WIDTH = 100


@dataclass(frozen=True)
class Documented:
    """One class, function, method or property of the stub, with its runtime docstring."""

    name: str
    node: ast.ClassDef | ast.FunctionDef
    runtime: str | None

    @property
    def stub(self) -> str | None:
        return ast.get_docstring(self.node)


def _is_overload(node: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "overload" for d in node.decorator_list)


def _public(name: str) -> bool:
    return not name.startswith("_")


def _runtime_doc(obj: object) -> str | None:
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def documented(tree: ast.Module, core: ModuleType) -> Iterator[Documented]:
    """Every public class, function, method and property of the stub, in file order."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and _public(node.name):
            yield Documented(node.name, node, _runtime_doc(getattr(core, node.name, None)))
        if not (isinstance(node, ast.ClassDef) and _public(node.name)):
            continue
        cls = getattr(core, node.name, None)
        yield Documented(node.name, node, _runtime_doc(cls))
        for member in node.body:
            if (
                isinstance(member, ast.FunctionDef)
                and _public(member.name)
                and not _is_overload(member)
            ):
                attr = inspect.getattr_static(cls, member.name, None)
                # A staticmethod's (or classmethod's) own docstring is Python's text about
                # staticmethod: help() shows the function's.
                if isinstance(attr, staticmethod | classmethod):
                    attr = attr.__func__
                yield Documented(f"{node.name}.{member.name}", member, _runtime_doc(attr))


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.split() == b.split()


def _render(doc: str, indent: int) -> list[str]:
    """The docstring as stub lines at ``indent``; lines too long for ruff are wrapped."""
    pad = " " * indent
    prefix = 'r"""' if "\\" in doc else '"""'
    lines = doc.splitlines()
    if len(lines) == 1 and indent + len(prefix) + len(doc) + 3 <= WIDTH:
        return [f'{pad}{prefix}{doc}"""']
    out: list[str] = []
    for i, line in enumerate(lines):
        first = prefix if i == 0 else ""
        room = WIDTH - indent - len(first)
        wrapped = textwrap.wrap(line, room, break_on_hyphens=False) if len(line) > room else []
        parts = wrapped or [line]
        out.append(f"{pad}{first}{parts[0]}".rstrip())
        out.extend(f"{pad}{part}".rstrip() for part in parts[1:])
    out.append(f'{pad}"""')
    return out


def _edit(lines: list[str], item: Documented) -> None:
    """Replaces (or inserts) the docstring of ``item`` in ``lines``, the stub's text."""
    assert item.runtime is not None
    node = item.node
    first = node.body[0]
    indent = node.col_offset + 4
    new = _render(item.runtime, indent)
    has_doc = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    if has_doc:
        lines[first.lineno - 1 : first.end_lineno] = new
        return
    is_ellipsis = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and first.value.value is Ellipsis
    )
    if is_ellipsis and len(node.body) == 1 and first.lineno == first.end_lineno:
        # ``def f(self) -> int: ...`` becomes the signature and the docstring; a lone
        # ``...`` line becomes the docstring.
        row = first.lineno - 1
        head = lines[row][: first.col_offset].rstrip()
        lines[row : row + 1] = [head, *new] if head else new
        return
    lines[first.lineno - 1 : first.lineno - 1] = new


def sync(stub: Path, core: ModuleType, *, write: bool) -> list[str]:
    """Problems left in the stub (after rewriting it, if ``write``)."""
    text = stub.read_text()
    items = list(documented(ast.parse(text), core))
    problems = [
        f"{item.name}: no docstring at runtime (add a Rust doc comment)"
        for item in items
        if item.runtime is None
    ]
    stale = [
        item for item in items if item.runtime is not None and not _same(item.stub, item.runtime)
    ]
    if not write:
        return problems + [
            f"{item.name}: the stub's docstring differs from help()'s" for item in stale
        ]
    lines = text.splitlines()
    # Bottom up, so that the line numbers of the edits still to come stay right.
    for item in sorted(stale, key=lambda i: i.node.body[0].lineno, reverse=True):
        _edit(lines, item)
    stub.write_text("\n".join(lines) + "\n")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="report differences, change nothing (default: rewrite)"
    )
    args = parser.parse_args()
    import replikv._core as core

    problems = sync(STUB, core, write=not args.check)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
