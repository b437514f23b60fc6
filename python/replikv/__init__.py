"""replikv: replicated key-value stores built on one durable change log.

Start with :class:`Store`; see the README for replicas and the cache.
"""

from __future__ import annotations

from ._core import Change, Changes, Checksum, Op, Receipt, Scan, Store, Transaction, __version__
from ._store import Table
from .exceptions import (
    CorruptionError,
    LogTruncated,
    ReadOnlyError,
    ReplikvError,
    ReplikvOSError,
    StoreClosed,
    StoreLockedError,
    StoreNotFoundError,
    StorePermissionError,
    ValueTooLarge,
)

__all__ = [
    "Change",
    "Changes",
    "Checksum",
    "CorruptionError",
    "LogTruncated",
    "Op",
    "ReadOnlyError",
    "Receipt",
    "ReplikvError",
    "ReplikvOSError",
    "Scan",
    "Store",
    "StoreClosed",
    "StoreLockedError",
    "StoreNotFoundError",
    "StorePermissionError",
    "Table",
    "Transaction",
    "ValueTooLarge",
    "__version__",
]
