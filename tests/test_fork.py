"""A handle belongs to the process that opened it: a child made by fork() gets a clear error
and never writes to, or changes, the parent's store."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import replikv

pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")

_inherited: dict[str, object] = {}


def _attempts(worker: int) -> list[str]:
    """Every kind of use of the inherited handles; the name of what each one raised."""
    store = _inherited["store"]
    assert isinstance(store, replikv.Store)
    attempts = {
        "put": lambda: store.put("t", f"child-{worker}", worker),
        "put_many": lambda: store.put_many("t", [(f"many-{worker}", 1)]),
        "delete": lambda: store.delete("t", "parent-0"),
        "transaction": lambda: store.transaction().put("t", "tx", worker),
        "get": lambda: store.get("t", "parent-0"),
        "last_lsn": lambda: store.last_lsn,
        "scan": lambda: next(iter(store.scan("t"))),
        "changes": lambda: next(iter(store.changes())),
        "started scan": lambda: next(_inherited["scan"]),  # type: ignore[call-overload]
        "close": store.close,
    }
    outcomes = []
    for name, attempt in attempts.items():
        try:
            result = attempt()
        except replikv.InheritedHandleError as err:
            assert "fork" in str(err) and "spawn" in str(err), err
            outcomes.append("refused")
        except Exception as err:
            outcomes.append(f"{name}: {type(err).__name__}: {err}")
        else:
            outcomes.append(f"{name} returned {result!r}")
    return outcomes


def test_forked_workers_get_no_receipt_and_the_parents_data_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = replikv.Store(path)
    store.put_many("t", [(f"parent-{i}", i) for i in range(100)])
    scan = iter(store.scan("t"))
    next(scan)  # a started iterator holds buffered rows
    _inherited.update(store=store, scan=scan)
    try:
        with multiprocessing.get_context("fork").Pool(4) as pool:
            results = pool.map(_attempts, range(4))
    finally:
        _inherited.clear()
    for outcomes in results:
        assert outcomes == ["refused"] * len(outcomes), outcomes
    # The parent goes on as if nothing happened: the next LSN is its own, data intact.
    assert store.put("t", "parent-after", 1).lsn == 2
    assert store.count("t") == 101
    store.close()
    with replikv.Store(path) as reopened:
        assert reopened.last_lsn == 2
        assert dict(reopened.scan("t")) == {
            **{f"parent-{i}": i for i in range(100)},
            "parent-after": 1,
        }
        assert [c.lsn for c in reopened.changes()] == [1, 2]


def _replicate_in_child(base: str) -> object:
    """Opens its own stores after the fork and replicates between them."""
    inherited = _inherited["primary"]
    assert isinstance(inherited, replikv.Primary)
    try:
        inherited.status()
    except replikv.InheritedHandleError:
        pass
    else:
        return "the inherited primary answered"
    with (
        replikv.Store(Path(base) / "child-primary") as store,
        replikv.Primary(store) as primary,
        replikv.Replica(Path(base) / "child-replica", primary=primary.address) as replica,
    ):
        receipt = store.put("t", "k", {"from": os.getpid()})
        replicated = replica.get("t", "k", min_lsn=receipt.lsn, timeout=30)
    return replicated


def test_a_forked_child_can_open_and_replicate_its_own_stores(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "parent")
    with replikv.Primary(store) as primary:  # the parent's network runtime is running
        _inherited["primary"] = primary
        try:
            with multiprocessing.get_context("fork").Pool(1) as pool:
                result = pool.apply(_replicate_in_child, (str(tmp_path),))
        finally:
            _inherited.clear()
        assert isinstance(result, dict) and result["from"] != os.getpid(), result
        assert primary.status().replicas == []
    store.close()


def test_an_inherited_transaction_is_refused_and_releases_nothing_in_the_parent(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "db")
    tx = store.transaction()
    tx.put("t", "pending", 1)  # holds the writer lock in the parent
    pid = os.fork()
    if pid == 0:  # the child: the commit is refused; dropping the handles is harmless
        refused = False
        try:
            tx.commit()
        except replikv.InheritedHandleError:
            refused = True
        handles = [tx, store]
        handles.clear()
        gc.collect()
        os._exit(0 if refused else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tx.commit().lsn == 1
    assert store.get("t", "pending") == 1
    store.close()


def test_a_child_dropping_inherited_replication_handles_exits_and_the_parent_goes_on(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    held: list[object] = [store]
    held.append(replikv.Primary(store, ship_interval=0.01))
    primary = held[1]
    assert isinstance(primary, replikv.Primary)
    held.append(replikv.Replica(tmp_path / "replica", primary=primary.address))
    del primary
    pid = os.fork()
    if pid == 0:  # the child: the only references go, so every handle is dropped here
        held.clear()
        gc.collect()
        os._exit(0)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError("the child hung dropping the handles it inherited")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    _, primary, replica = held
    assert isinstance(primary, replikv.Primary) and isinstance(replica, replikv.Replica)
    receipt = store.put("t", "k", "after the fork")
    assert replica.get("t", "k", min_lsn=receipt.lsn, timeout=30) == "after the fork"
    replica.close()
    primary.close()
    store.close()


def test_a_child_closing_an_inherited_served_store_is_refused_as_inherited(tmp_path: Path) -> None:
    """The refusal to close a store under its Primary never hides the fork's own refusal."""
    store = replikv.Store(tmp_path / "primary")
    with replikv.Primary(store):
        pid = os.fork()
        if pid == 0:
            try:
                store.close()
            except replikv.InheritedHandleError:
                os._exit(0)
            except BaseException:
                os._exit(2)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.put("t", "k", 1).lsn == 1
    store.close()
