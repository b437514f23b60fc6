"""``Cache.memoize``: results of expensive functions, cached by their arguments."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ._core import Cache

P = ParamSpec("P")
R = TypeVar("R")

# Memoized results live in a table of their own per function, named after it.
_TABLE_PREFIX = "memo."
_MAX_TABLE = 64


def _table(function: Callable[..., Any]) -> str:
    name = f"{_TABLE_PREFIX}{function.__module__}.{function.__qualname__}"
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
    return cleaned[:_MAX_TABLE]


def memoize(cache: Cache, ttl: float | None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The decorator `Cache.memoize(ttl=...)` returns.

    A call's key is the ``repr`` of its arguments, so arguments must have a ``repr`` that
    tells different values apart (str, int, tuples of them...). A result of ``None`` is
    not cached. ``wrapped.invalidate(*args, **kwargs)`` drops one call's result,
    ``wrapped.invalidate_all()`` every result of the function.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        table = _table(function)

        def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            return repr((args, sorted(kwargs.items())))

        @functools.wraps(function)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            call = key(args, kwargs)
            found = cache.get(table, call, _MISSING, read_through=False)
            if found is not _MISSING:
                return found  # type: ignore[no-any-return]
            result = function(*args, **kwargs)
            if result is not None:
                cache.set(table, call, result, ttl=ttl)
            return result

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            return cache.invalidate(table, key(args, kwargs))

        def invalidate_all() -> int:
            return cache.invalidate_prefix(table)

        wrapped.invalidate = invalidate  # type: ignore[attr-defined]
        wrapped.invalidate_all = invalidate_all  # type: ignore[attr-defined]
        return wrapped

    return decorate


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
