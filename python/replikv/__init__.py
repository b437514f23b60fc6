"""replikv: replicated key-value stores built on one durable change log.

- :class:`Store` opens a directory: tables of keys and values (``store.table(name)`` is a
  :class:`Table`, a mapping), one log entry per write, :class:`Transaction` and
  :class:`Batch` for many writes in one entry, ``store.changes()`` for the log itself.
- :class:`Primary` serves a store's log to :class:`Replica` processes over TCP, async or
  sync (``durability="sync"``); ``Replica.promote`` makes one the primary after a failure.
- :class:`Cache` reads through an in-process LRU or :class:`CacheNode` servers that speak
  the Redis protocol and follow the log.
- ``Table.to_pandas``, ``Table.to_arrow_batches`` and ``Store.put_dataframe`` move data to
  and from pandas and Arrow; :func:`encode_value` shows how a value is stored.
- ``replikv.testing`` is a pytest plugin with a ``replikv_store`` fixture; the ``replikv``
  command covers the same roles from a shell (``replikv --help``).

Every status (:class:`PrimaryStatus`, :class:`ReplicaStatus`, :class:`CacheStats`, ...) is a
typed object with ``to_dict()``, shown as a table in Jupyter. See the README for a guide.
"""

from __future__ import annotations

from ._core import (
    ArrowStream,
    Batch,
    Cache,
    CacheNode,
    CacheNodeStats,
    CacheStats,
    Change,
    Changes,
    ChangeStream,
    Checksum,
    Damage,
    Op,
    Ops,
    Primary,
    PrimaryStatus,
    Promotion,
    Receipt,
    Replica,
    ReplicaInfo,
    ReplicaStatus,
    ReplicaVerify,
    Scan,
    ScrubReport,
    Slot,
    Store,
    StoreStats,
    Switchover,
    Transaction,
    VerifyReport,
    __version__,
    decode_value,
    encode_value,
    promote_stopped,
)
from ._diverged import DivergenceReport, read_diverged
from ._logging import forward as _forward_logs
from ._store import BatchTable, Table
from .exceptions import (
    AuthError,
    CacheError,
    CorruptionError,
    DivergedError,
    FencedError,
    InheritedHandleError,
    LogTruncated,
    NetworkError,
    NetworkTimeout,
    NotAStoreError,
    ProtocolError,
    ReadOnlyError,
    ReplicationError,
    ReplicationTimeout,
    ReplikvError,
    ReplikvOSError,
    StoreClosed,
    StoreFileExistsError,
    StoreIsADirectoryError,
    StoreLockedError,
    StoreNotADirectoryError,
    StoreNotFoundError,
    StoreOptionsError,
    StorePermissionError,
    ValueTooLarge,
    WritesPausedError,
)

__all__ = [
    "ArrowStream",
    "AuthError",
    "Batch",
    "BatchTable",
    "Cache",
    "CacheError",
    "CacheNode",
    "CacheNodeStats",
    "CacheStats",
    "Change",
    "ChangeStream",
    "Changes",
    "Checksum",
    "CorruptionError",
    "Damage",
    "DivergedError",
    "DivergenceReport",
    "FencedError",
    "InheritedHandleError",
    "LogTruncated",
    "NetworkError",
    "NetworkTimeout",
    "NotAStoreError",
    "Op",
    "Ops",
    "Primary",
    "PrimaryStatus",
    "Promotion",
    "ProtocolError",
    "ReadOnlyError",
    "Receipt",
    "Replica",
    "ReplicaInfo",
    "ReplicaStatus",
    "ReplicaVerify",
    "ReplicationError",
    "ReplicationTimeout",
    "ReplikvError",
    "ReplikvOSError",
    "Scan",
    "ScrubReport",
    "Slot",
    "Store",
    "StoreClosed",
    "StoreFileExistsError",
    "StoreIsADirectoryError",
    "StoreLockedError",
    "StoreNotADirectoryError",
    "StoreNotFoundError",
    "StoreOptionsError",
    "StorePermissionError",
    "StoreStats",
    "Switchover",
    "Table",
    "Transaction",
    "ValueTooLarge",
    "VerifyReport",
    "WritesPausedError",
    "__version__",
    "decode_value",
    "encode_value",
    "promote_stopped",
    "read_diverged",
]

_forward_logs()
