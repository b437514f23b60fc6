"""How a command says in one line what failed: by the error's own message, without the
numbers and repeats an ``OSError`` carries for programs (``[Errno 11] ...: 'dir'``, the
``(os error 11)`` of a Rust message)."""

from __future__ import annotations

import re

_OS_ERROR_NUMBER = re.compile(r" \(os error \d+\)")


def describe(failure: BaseException) -> str:
    """``failure`` for a person: an ``OSError`` by its message, naming its file once; a
    ``KeyError`` by its key's text; anything else as ``str()`` says it (its type's name if
    that is empty)."""
    if isinstance(failure, KeyError) and failure.args:
        text = str(failure.args[0])
    elif isinstance(failure, OSError) and failure.strerror:
        text = _OS_ERROR_NUMBER.sub("", failure.strerror)
        if failure.filename is not None and str(failure.filename) not in text:
            text = f"{failure.filename}: {text}"
    else:
        text = str(failure)
    return text or type(failure).__name__
