"""Extreme numbers never reach Rust arithmetic as a panic: a huge timeout means "wait for
ever", a negative or NaN one is a ValueError, and nothing escapes as PanicException."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import replikv

HUGE = [sys.maxsize, float(sys.maxsize), 1e300, math.inf]
BAD = [-1.0, -1e-9, math.nan, -math.inf]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[replikv.Primary, replikv.Replica]]:
    store = replikv.Store(tmp_path / "primary")
    with (
        replikv.Primary(store, ship_interval=0.01) as primary,
        replikv.Replica(tmp_path / "replica", primary=primary.address) as replica,
    ):
        receipt = store.put("t", "k", 1)
        assert replica.wait_for(receipt.lsn, timeout=30)
        assert primary.wait_for(receipt.lsn, timeout=30) == 1
        yield primary, replica
    store.close()


def waits(
    primary: replikv.Primary, replica: replikv.Replica, lsn: int
) -> dict[str, Callable[[float], object]]:
    return {
        "Replica.wait_for": lambda t: replica.wait_for(lsn, timeout=t),
        "Replica.get": lambda t: replica.get("t", "k", min_lsn=lsn, timeout=t),
        "Primary.wait_for": lambda t: primary.wait_for(lsn, timeout=t),
    }


@pytest.mark.parametrize("timeout", HUGE)
def test_a_huge_timeout_waits_for_ever_without_a_panic(
    pair: tuple[replikv.Primary, replikv.Replica], timeout: float
) -> None:
    primary, replica = pair
    for name, wait in waits(primary, replica, 1).items():
        assert wait(timeout) in (True, 1), name
    # Not yet there: the wait lasts until a write arrives (bounded by the test timeout).
    later = threading.Timer(0.2, primary.store.put, ("t", "k", 2))
    later.start()
    try:
        for name, wait in waits(primary, replica, 2).items():
            assert wait(timeout) in (True, 1, 2), name
    finally:
        later.join()


@pytest.mark.parametrize("timeout", BAD)
def test_a_negative_or_nan_timeout_is_a_value_error(
    pair: tuple[replikv.Primary, replikv.Replica], timeout: float
) -> None:
    primary, replica = pair
    for name, wait in waits(primary, replica, 1).items():
        with pytest.raises(ValueError, match="timeout"):
            wait(timeout)
        assert name


@pytest.mark.parametrize("seconds", [*BAD, 1e300, sys.maxsize])
def test_interval_settings_out_of_range_are_value_errors(tmp_path: Path, seconds: float) -> None:
    with pytest.raises(ValueError, match="checkpoint_seconds"):
        replikv.Store(tmp_path / "db", checkpoint_seconds=seconds)
    with replikv.Store(tmp_path / "db") as store:
        for option in ("ship_interval", "heartbeat_interval", "retain_seconds"):
            options: dict[str, Any] = {option: seconds}
            with pytest.raises(ValueError, match=option):
                replikv.Primary(store, **options)
    with pytest.raises(ValueError, match="max_backoff"):
        replikv.Replica(tmp_path / "r", primary="127.0.0.1:9", max_backoff=seconds)
    with pytest.raises(ValueError, match="timeout"):
        replikv._core.fetch_status("127.0.0.1:9", timeout=seconds)


@pytest.mark.parametrize("lsn", [-1, 2**64])
def test_out_of_range_lsns_in_waits_are_clear_errors(
    pair: tuple[replikv.Primary, replikv.Replica], lsn: int
) -> None:
    primary, replica = pair
    expected = ValueError if lsn < 0 else OverflowError
    for name, wait in waits(primary, replica, lsn).items():
        with pytest.raises(expected, match="lsn"):
            wait(1.0)
        assert name
    with pytest.raises(expected, match="replicas"):
        primary.wait_for(1, replicas=lsn)


@pytest.mark.parametrize(
    ("option", "value"),
    [("segment_bytes", 2**63), ("segment_bytes", 100), ("max_key_bytes", 2**64 - 1)],
)
def test_store_size_options_out_of_range_are_value_errors(
    tmp_path: Path, option: str, value: int
) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=option):
        replikv.Store(tmp_path / "db", **options)


@pytest.mark.parametrize("value", [0, 100, 2**40])
def test_a_primary_batch_size_out_of_range_is_a_value_error(tmp_path: Path, value: int) -> None:
    with replikv.Store(tmp_path / "db") as store, pytest.raises(ValueError, match="max_batch"):
        replikv.Primary(store, max_batch_bytes=value)
