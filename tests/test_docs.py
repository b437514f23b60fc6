"""Every public class and method has a docstring that ``help()`` shows and the stub repeats."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import replikv
import replikv._core as core

ROOT = Path(__file__).resolve().parent.parent


def _stub_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stub_docs", ROOT / "dev" / "stub_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stub_docs"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_stub_repeats_every_docstring_help_shows() -> None:
    stub_docs = _stub_docs()
    problems = stub_docs.sync(stub_docs.STUB, core, write=False)
    assert not problems, "run `python dev/stub_docs.py`:\n" + "\n".join(problems)


def test_the_stub_check_compares_a_staticmethod_with_its_own_docstring() -> None:
    # getattr_static gives the staticmethod object, whose __doc__ is Python's text about
    # staticmethod: the stub of Store.detach carried that text, and the check passed it.
    stub_docs = _stub_docs()
    tree = ast.parse(stub_docs.STUB.read_text())
    detach = next(i for i in stub_docs.documented(tree, core) if i.name == "Store.detach")
    assert detach.runtime == inspect.cleandoc(core.Store.detach.__doc__ or "")
    assert "StoreLockedError" in (detach.stub or "")


def _members(cls: type) -> list[tuple[str, object]]:
    return [
        (name, value)
        for name, value in vars(cls).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    ]


PUBLIC = [getattr(replikv, name) for name in replikv.__all__ if name != "__version__"]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda obj: getattr(obj, "__name__", repr(obj)))
def test_every_public_name_and_its_methods_have_a_docstring(obj: object) -> None:
    own = obj.__doc__ if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if isinstance(obj, type) and issubclass(obj, BaseException):
        inherited = {base.__doc__ for base in obj.__mro__[1:]}
        assert own and own not in inherited, f"{obj.__name__} has no docstring of its own"
        return
    assert own and own.strip(), f"{obj!r} has no docstring"
    if isinstance(obj, type):
        missing = [name for name, value in _members(obj) if not inspect.getdoc(value)]
        assert not missing, f"{obj.__name__}: methods without a docstring: {missing}"


def test_the_module_docstring_names_only_what_exists() -> None:
    doc = replikv.__doc__ or ""
    named = set(re.findall(r":(?:class|func|meth):`~?([\w.]+)`", doc))
    assert named, "the module docstring should point at the main classes"
    for dotted in named:
        obj: object = replikv
        for part in dotted.removeprefix("replikv.").split("."):
            assert hasattr(obj, part), f"the module docstring names {dotted}, which does not exist"
            obj = getattr(obj, part)


def test_no_docstring_or_stub_cites_the_design_document() -> None:
    # DESIGN.md is the maintainers' and does not ship: users read the README.
    cited = [
        f"{obj.__name__}.{name}"
        for obj in PUBLIC
        if isinstance(obj, type)
        for name, value in [("", obj), *_members(obj)]
        if "DESIGN" in (inspect.getdoc(value) or "")
    ]
    assert cited == []
    stub = (ROOT / "python" / "replikv" / "_core.pyi").read_text()
    assert "DESIGN" not in stub
