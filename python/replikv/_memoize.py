"""``Cache.memoize``: results of expensive functions, cached by their arguments."""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import threading
import types
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from ._core import Cache
from .exceptions import ReplikvError

P = ParamSpec("P")
R = TypeVar("R")

# Memoized results live in a table of their own per function: a readable part of its
# name, then a digest of everything that makes it that function (see `_identity`).
_TABLE_PREFIX = "memo."
_MAX_TABLE = 64
_DIGEST_HEX = 16
_PLAIN = (type(None), bool, int, float, complex, str, bytes)
# How a result is stored (part of each function's identity, so that processes that store
# results otherwise never read each other's): `[tuple paths, value]`, see `_packed`.
_FORMAT = b"[tuple paths, value]"
_log = logging.getLogger("replikv.cache")


def _code(code: types.CodeType, digest: Any) -> None:
    """Feeds `code` to `digest`: its bytecode, the names it uses and its constants, nested
    functions' code included (a code object's own repr holds its address, which differs
    from one process to the next)."""
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code(const, digest)
        else:
            digest.update(repr(const).encode())


def _identity(function: Callable[..., Any]) -> str:
    """What tells `function` from every other: its module and name, its code, and the
    values it closes over and defaults to. Two lambdas, two closures of one factory with
    other values, or two functions whose long names agree at the start are each their own;
    the same function in another process (the same code, the same plain values) is the
    same, so that processes sharing cache nodes share its results. A function over any
    other value (a DataFrame, whose repr shows a few rows; an object whose repr says little)
    or a callable that is not a function gets a table of its own each time it is decorated:
    its results are never shared, rather than shared by mistake."""
    digest = hashlib.blake2b(digest_size=_DIGEST_HEX // 2)
    digest.update(_FORMAT)
    digest.update(f"{function.__module__}.{function.__qualname__}".encode())
    code = getattr(function, "__code__", None)
    cells = getattr(function, "__closure__", None) or ()
    values = [cell.cell_contents if _filled(cell) else None for cell in cells]
    values += [getattr(function, "__defaults__", None), getattr(function, "__kwdefaults__", None)]
    if isinstance(code, types.CodeType) and all(_plain(value) for value in values):
        _code(code, digest)
        digest.update(repr(values).encode())
    elif isinstance(function, types.BuiltinFunctionType):
        digest.update(repr(function).encode())
    else:
        digest.update(uuid.uuid4().bytes)
    return digest.hexdigest()


def _plain(value: Any) -> bool:
    """Whether ``repr(value)`` is all of ``value``: None, bool, numbers, str, bytes, and
    tuples, lists and dicts of these."""
    if type(value) in _PLAIN:
        return True
    if type(value) in (tuple, list):
        return all(_plain(item) for item in value)
    if type(value) is dict:
        return all(_plain(key) and _plain(item) for key, item in value.items())
    return False


def _key(call: tuple[tuple[Any, ...], list[tuple[str, Any]]]) -> str:
    """A call's key: the ``repr`` of plain arguments (readable in the cache's keys), or
    else ``#`` and a digest of their pickle (never the start of a tuple's repr), which holds
    all of a DataFrame, an array or an object's attributes. Two calls whose reprs agree
    but whose arguments differ (two frames that differ past the rows a repr shows) never
    share a result; an argument that cannot be pickled is refused, rather than keyed by
    a repr that may say too little."""
    args, kwargs = call
    if _plain(list(args)) and all(_plain(value) for _, value in kwargs):
        return repr(call)
    try:
        pickled = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as failure:
        raise TypeError(
            "memoize keys a call by its arguments' repr when they are plain values (str, "
            "int, float, bytes, None, and tuples, lists and dicts of them), else by their "
            f"pickle, and these cannot be pickled: {failure}"
        ) from None
    return "#" + hashlib.blake2b(pickled, digest_size=16).hexdigest()


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
    except ValueError:
        return False
    return True


def _table(function: Callable[..., Any]) -> str:
    name = f"{_TABLE_PREFIX}{function.__module__}.{function.__qualname__}"
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
    readable = cleaned[: _MAX_TABLE - _DIGEST_HEX - 1]
    return f"{readable}.{_identity(function)}"


def _tuple_paths(value: Any, path: list[Any], found: list[list[Any]]) -> None:
    """Adds to `found` the path (list indexes and dict keys) of every tuple in `value`, a
    tuple's own before those inside it."""
    if isinstance(value, tuple):
        found.append(path)
    items: Iterable[tuple[Any, Any]] = ()
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    for step, item in items:
        # Only containers can hold tuples: no path is built for the scalars of a long list.
        if isinstance(item, (list, tuple, dict)):
            _tuple_paths(item, [*path, step], found)


def _packed(result: Any) -> list[Any]:
    """`result` as memoize stores it: with the paths of its tuples, which cache nodes hold
    as lists (a store has no tuple), so that a hit returns what the call returned, a tuple
    where it was one (one that is a list breaks `==` against a tuple, and a dict key)."""
    paths: list[list[Any]] = []
    _tuple_paths(result, [], paths)
    return [paths, result]


def _unpacked(stored: Any) -> Any:
    """The result `_packed` stored: its lists at the tuples' paths made tuples again, the
    innermost first; `_MISSING` for a value of another shape (anyone may write to a
    node, with redis-cli say), which is then computed again rather than failing the call."""
    try:
        paths, result = stored
        holder = [result]
        for path in reversed(paths):
            steps: list[Any] = [0, *path]
            last = steps.pop()
            parent: Any = holder
            for step in steps:
                parent = parent[step]
            if isinstance(parent[last], list):
                parent[last] = tuple(parent[last])
    except (TypeError, ValueError, IndexError, KeyError):
        return _MISSING
    return holder[0]


def _keep(cache: Cache, table: str, call: str, result: Any, ttl: float | None) -> None:
    """Caches a computed result if the cache can hold it: one it cannot is logged and left
    out, as the call that computed it must not fail for it."""
    try:
        cache.set(table, call, result, ttl=ttl)
    except (ReplikvError, TypeError, ValueError, OverflowError) as refused:
        # OverflowError: an int past 64 bits, which a store cannot hold either.
        _log.debug("a result of %s is not cached: %s", table, refused)


def memoize(cache: Cache, ttl: float | None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The decorator `Cache.memoize(ttl=...)` returns.

    A call's key is the ``repr`` of its arguments when that is all of them (see `_key`),
    else a digest of their pickle: a DataFrame or an array (whose repr shows a few rows)
    is keyed by its whole content. Each function's results are its own: two lambdas, or
    two closures of one factory over other values, never share them (see `_identity`). A
    result of ``None`` is not cached, nor one the cache cannot hold (larger than its
    bound, of a type a store cannot hold, or with no node answering): the call returns it
    all the same. ``wrapped.invalidate(*args, **kwargs)`` drops one call's result,
    ``wrapped.invalidate_all()`` every result of the function; a call that was computing
    meanwhile returns its result without caching it.
    """

    # Cache nodes hold what a store holds, where a tuple is a list: results go there with
    # the paths of their tuples. An in-process cache keeps the objects as they are.
    packs = bool(cache.nodes)

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        table = _table(function)
        # Counts the invalidations in this process: a result computed across one may be of
        # the data from before it, and is returned but not cached. The lock makes "not
        # invalidated since, so store it" one step against an invalidation. (One made in
        # another process sharing the nodes is not seen here.)
        invalidations = 0
        storing = threading.Lock()

        def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            return _key((args, sorted(kwargs.items())))

        @functools.wraps(function)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            call = key(args, kwargs)
            found = cache.get(table, call, _MISSING, read_through=False)
            if packs and found is not _MISSING:
                found = _unpacked(found)
            if found is not _MISSING:
                return found  # type: ignore[no-any-return]
            before = invalidations
            result = function(*args, **kwargs)
            if result is not None:
                with storing:
                    if invalidations == before:
                        _keep(cache, table, call, _packed(result) if packs else result, ttl)
            return result

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            nonlocal invalidations
            with storing:
                invalidations += 1
                return cache.invalidate(table, key(args, kwargs))

        def invalidate_all() -> int:
            nonlocal invalidations
            with storing:
                invalidations += 1
                return cache.invalidate_prefix(table)

        wrapped.invalidate = invalidate  # type: ignore[attr-defined]
        wrapped.invalidate_all = invalidate_all  # type: ignore[attr-defined]
        return wrapped

    return decorate


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
