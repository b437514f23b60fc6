"""The ``replikv_store`` fixture, used the way a user tests a pipeline of their own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

import pytest
import replikv

pytest_plugins = ["pytester"]


def opens_per_campaign(store: replikv.Store, events: Iterable[dict[str, Any]]) -> dict[str, int]:
    """A user's pipeline step: stores raw events, then counts opens per campaign."""
    store.table("events").update((event["id"], event) for event in events)
    counts: dict[str, int] = {}
    for event in store.table("events").values():
        if event["kind"] == "open":
            counts[event["campaign"]] = counts.get(event["campaign"], 0) + 1
    return counts


def test_a_pipeline_tested_with_the_replikv_store_fixture(replikv_store: replikv.Store) -> None:
    events = [
        {"id": "e1", "campaign": "spring", "kind": "open"},
        {"id": "e2", "campaign": "spring", "kind": "click"},
        {"id": "e3", "campaign": "summer", "kind": "open"},
        {"id": "e4", "campaign": "spring", "kind": "open"},
    ]
    assert opens_per_campaign(replikv_store, events) == {"spring": 2, "summer": 1}
    assert replikv_store.last_lsn == 1, "update() wrote the events in one transaction"


def test_each_test_gets_an_empty_store(replikv_store: replikv.Store) -> None:
    assert replikv_store.tables() == []
    assert replikv_store.last_lsn == 0


def test_the_fixture_is_registered_for_pytest_by_the_package() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("replikv") == "replikv.testing"


def test_importing_replikv_does_not_import_pytest() -> None:
    code = "import sys, replikv; print('pytest' in sys.modules, 'replikv.testing' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_a_users_test_run_gets_the_fixture_and_its_store_is_closed_after_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        seen = []

        def test_writes(replikv_store):
            seen.append(replikv_store)
            replikv_store.put("subscribers", "ana@example.com", {"opted_in": True})
            assert replikv_store.get("subscribers", "ana@example.com") == {"opted_in": True}

        def test_the_store_of_the_previous_test_is_closed():
            assert seen[0].closed
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
