"""The exception hierarchy of replikv: everything it raises on purpose is a ``ReplikvError``.

Errors that come from the operating system also subclass the ``OSError`` subclass Python
gives their errno (as ``OSError(errno, ...)`` does), so ``except FileNotFoundError``,
``except PermissionError`` or ``except NotADirectoryError`` work as usual.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "AuthError",
    "CorruptionError",
    "DivergedError",
    "FencedError",
    "InheritedHandleError",
    "LogTruncated",
    "NotAStoreError",
    "ProtocolError",
    "ReadOnlyError",
    "ReplicationError",
    "ReplicationTimeout",
    "ReplikvError",
    "ReplikvOSError",
    "StoreClosed",
    "StoreFileExistsError",
    "StoreIsADirectoryError",
    "StoreLockedError",
    "StoreNotADirectoryError",
    "StoreNotFoundError",
    "StoreOptionsError",
    "StorePermissionError",
    "ValueTooLarge",
    "WritesPausedError",
]


class ReplikvError(Exception):
    """Base class of every replikv error."""


class StoreClosed(ReplikvError):
    """The store was closed, by ``close()`` or by itself after a failed write to disk.

    The write that failed raises the operating system's error (``PermissionError``, an
    ``OSError`` for a full disk, ...); only the calls after it raise ``StoreClosed``, whose
    message names that first failure. Whether the failed write is durable is not known:
    after a reopen it is there whole or not at all.
    """


class InheritedHandleError(ReplikvError):
    """A store, transaction, iterator, primary or replica used in a child process.

    A handle belongs to the process that opened it. A child made by ``fork()`` (the default
    start method of ``multiprocessing`` on Linux) inherits a copy that must not touch the
    parent's files: open the store in the child after the fork, or start the workers with
    ``multiprocessing.get_context("spawn")``.
    """


class ReadOnlyError(ReplikvError):
    """A write on a read-only store (a replica's store)."""


class CorruptionError(ReplikvError):
    """The log, the tables or a stored value is damaged or not a replikv file."""


class ValueTooLarge(ReplikvError, ValueError):
    """A key, value or transaction is over its configured size limit."""


class LogTruncated(ReplikvError):
    """The requested LSN is older than the oldest entry the log still retains."""


class ReplikvOSError(ReplikvError, OSError):
    """An operating-system failure on the store's files.

    An errno of files that Python maps to a subclass of ``OSError`` raises the subclass of
    this class that also derives from that one: ``StoreNotFoundError`` for ``ENOENT`` (a
    ``FileNotFoundError``), ``StorePermissionError`` for ``EACCES`` and ``EPERM``,
    ``StoreNotADirectoryError`` for ``ENOTDIR``, ``StoreIsADirectoryError`` for
    ``EISDIR``, ``StoreFileExistsError`` for ``EEXIST``. Other errnos (``ENOSPC``,
    ``EIO``, ...) raise this class, as ``OSError(errno, ...)`` gives a plain ``OSError``
    for them. A write the log had no room for (``ENOSPC``) changed nothing and left the
    store open; after any other failed write the store closed itself.
    """


class StoreNotFoundError(ReplikvOSError, FileNotFoundError):
    """A path (or its parent directory) does not exist."""


class NotAStoreError(ReplikvOSError, FileExistsError):
    """``Store(path)`` on an existing directory that holds other files and none of a
    store's (a project folder given by mistake): nothing was written there. ``filename`` is
    the directory; the message names one of its files."""


class StorePermissionError(ReplikvOSError, PermissionError):
    """The store's files cannot be accessed with this process's permissions."""


class StoreNotADirectoryError(ReplikvOSError, NotADirectoryError):
    """A path the store needs as a directory is a file: the store's path, or one of its
    parents (``Store("notes.txt/db")``)."""


class StoreIsADirectoryError(ReplikvOSError, IsADirectoryError):
    """A path the store needs as a file is a directory."""


class StoreFileExistsError(ReplikvOSError, FileExistsError):
    """A file the store creates already exists."""


class StoreLockedError(ReplikvOSError, BlockingIOError):
    """The store directory is already open in another process (the message gives its pid
    and command line), or in this one by something that does not share it (a ``Replica``:
    the message says).

    ``pid`` is the holder's process id (``os.getpid()`` when the holder is this process),
    or ``None`` when its lock file could not be read; ``command`` is another process's
    command line, when ``/proc`` shows it (``None`` for this process).
    """

    pid: int | None = None
    command: str | None = None


class StoreOptionsError(ReplikvError, ValueError):
    """``Store(path, ...)`` asked for other options than the handle this process already has
    open on ``path`` was opened with.

    ``Store(path)`` returns another handle to a store the process has open only when the
    options are equal: a handle never silently runs with options other than those it asked
    for. The message names the first option that differs and both values; they are also
    ``option``, ``open_value`` and ``asked_value``.
    """

    def __init__(self, message: str, option: str, open_value: str, asked_value: str) -> None:
        super().__init__(message)
        self.option = option
        self.open_value = open_value
        self.asked_value = asked_value


class NetworkError(ReplikvOSError):
    """A network failure: an address that cannot be listened on, a peer that cannot be
    reached, a link that broke. ``errno`` is the operating system's error number."""


class NetworkTimeout(NetworkError, TimeoutError):
    """A peer did not answer, or went silent, for too long."""


class ReplicationError(ReplikvError):
    """Replication failed or cannot go on.

    When a sync write's primary stopped (closed, or handed over) or was deposed (a
    ``FencedError``) while the write waited for its quorum, the write is committed on the
    primary at ``lsn``, and ``acked_by`` names the replicas that held it durably then.
    Otherwise ``lsn`` is ``None`` and ``acked_by`` empty (a ``ReplicationTimeout`` says
    what its ``lsn`` is).
    """

    def __init__(self, message: str, lsn: int | None = None, acked_by: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.lsn = lsn
        self.acked_by = list(acked_by)


class ReplicationTimeout(ReplicationError):
    """A wait for replication did not finish in time.

    ``lsn`` is the LSN waited for: a sync write's (the write is committed on the primary
    at ``lsn``, and ``acked_by`` names the replicas that held it durably when the wait
    ended), or the ``min_lsn`` of a replica read. A peer that does not answer raises
    ``NetworkTimeout`` instead.
    """


class FencedError(ReplicationError):
    """A newer epoch exists: this primary was deposed and may not take acknowledged writes.
    ``epoch`` is the newest epoch involved. A sync write that was waiting for its quorum
    when the primary learned it is committed there at ``lsn`` (the new primary may not have
    it: a promotion's ``possible_loss`` accounts for it); one refused before it was
    committed has ``lsn`` ``None``."""

    def __init__(
        self,
        message: str,
        epoch: int = 0,
        lsn: int | None = None,
        acked_by: Iterable[str] = (),
    ) -> None:
        super().__init__(message, lsn, acked_by)
        self.epoch = epoch


class WritesPausedError(ReplicationError):
    """Writes are paused for a moment (a planned switchover hands the log to another
    primary): retry, at the new primary the message names once the switchover is over.
    Nothing of the refused write was committed."""


class DivergedError(ReplicationError):
    """The two stores' histories fork; the replica needs an explicit resync.

    ``fork_lsn`` is the first LSN at which they differ, when it is known (else ``None``).
    A replica stopped on a fork also gives the loss account: ``entries`` (how many entries
    only it holds, from the fork on) and ``tables`` (``{table: [key, ...]}``, the keys they
    touched). ``Replica(..., on_diverge="resync")`` keeps those entries in a report file
    (see :func:`replikv.read_diverged`) and re-seeds.
    """

    def __init__(
        self,
        message: str,
        fork_lsn: int | None = None,
        entries: int | None = None,
        tables: dict[str, list[Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.fork_lsn = fork_lsn
        self.entries = entries
        self.tables = dict(tables or {})


class AuthError(ReplikvError):
    """The shared token did not match (or the peer is not allowed)."""


class ProtocolError(ReplikvError):
    """The peer broke the wire protocol or speaks another version of it."""


class CacheError(ReplikvError):
    """A cache node or the cache client failed (a closed node, a broken reply)."""


#: The class of an OS failure on the store's files, by the subclass of ``OSError`` that
#: Python gives its errno.
_BY_OS_CLASS: dict[type[OSError], type[ReplikvOSError]] = {
    FileNotFoundError: StoreNotFoundError,
    PermissionError: StorePermissionError,
    NotADirectoryError: StoreNotADirectoryError,
    IsADirectoryError: StoreIsADirectoryError,
    FileExistsError: StoreFileExistsError,
}


def _os_error(errno: int, message: str, filename: str | None = None) -> ReplikvOSError:
    """The exception the Rust core raises for an OS failure with an errno: its class is
    chosen as ``OSError(errno, ...)`` chooses the builtin one."""
    builtin = type(OSError(errno, message))
    return _BY_OS_CLASS.get(builtin, ReplikvOSError)(errno, message, filename)
