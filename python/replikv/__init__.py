"""replikv: replicated key-value stores built on one durable change log.

Start with :class:`Store`; see the README for replicas and the cache.
"""

from __future__ import annotations

from ._core import (
    Change,
    Changes,
    Checksum,
    Damage,
    Op,
    Primary,
    Receipt,
    Replica,
    ReplicaInfo,
    Scan,
    ScrubReport,
    Store,
    Transaction,
    __version__,
)
from ._store import Table
from .exceptions import (
    AuthError,
    CorruptionError,
    DivergedError,
    FencedError,
    LogTruncated,
    ProtocolError,
    ReadOnlyError,
    ReplicationError,
    ReplicationTimeout,
    ReplikvError,
    ReplikvOSError,
    StoreClosed,
    StoreLockedError,
    StoreNotFoundError,
    StorePermissionError,
    ValueTooLarge,
)

__all__ = [
    "AuthError",
    "Change",
    "Changes",
    "Checksum",
    "CorruptionError",
    "Damage",
    "DivergedError",
    "FencedError",
    "LogTruncated",
    "Op",
    "Primary",
    "ProtocolError",
    "ReadOnlyError",
    "Receipt",
    "Replica",
    "ReplicaInfo",
    "ReplicationError",
    "ReplicationTimeout",
    "ReplikvError",
    "ReplikvOSError",
    "Scan",
    "ScrubReport",
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
