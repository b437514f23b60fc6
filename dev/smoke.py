"""Smoke test of an installed replikv, run by the Python of a fresh virtualenv.

dev/check_dist.py installs the wheel (or the sdist) into a new virtualenv and runs this file
with that virtualenv's Python from a directory outside the checkout, so only the installed
package can be imported. It exits non-zero, with a traceback, if anything is wrong.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import replikv
import replikv._core


def check_installed_not_source() -> None:
    """The package and its extension come from the virtualenv, not from a checkout."""
    package = Path(replikv.__file__).resolve()
    core = Path(replikv._core.__file__).resolve()
    prefix = Path(sys.prefix).resolve()
    assert prefix in package.parents, f"replikv imported from {package}, not from {prefix}"
    assert core.name == "_core.abi3.so", f"the extension is {core.name}, not the abi3 build"
    assert core.parent == package.parent, f"the extension is at {core}, outside the package"


def check_store(directory: Path) -> None:
    """A store opens, writes durably, reads back, and reopens with its rows."""
    with replikv.Store(directory) as store:
        receipt = store.put("subscribers", "ana@example.com", {"name": "Ana", "opted_in": True})
        assert receipt.lsn == 1, receipt
        store.put_many("events", ((i, {"type": "open"}) for i in range(1_000)))
        with store.transaction() as tx:
            tx.put("subscribers", "bo@example.com", {"name": "Bo", "opted_in": False})
        assert store.get("subscribers", "ana@example.com") == {"name": "Ana", "opted_in": True}
        assert len(store.table("events")) == 1_000
        assert [change.lsn for change in store.changes(since=0)] == [1, 2, 3]
    with replikv.Store(directory) as store:
        assert store.get("subscribers", "bo@example.com") == {"name": "Bo", "opted_in": False}


def check_command(directory: Path) -> None:
    """The ``replikv`` script is installed and runs a command on the store."""
    script = Path(sys.executable).parent / "replikv"
    shown = subprocess.run([script, "--help"], check=True, capture_output=True, text=True)
    assert "scrub" in shown.stdout, shown.stdout
    version = subprocess.run([script, "--version"], check=True, capture_output=True, text=True)
    assert version.stdout.strip() == f"replikv {replikv.__version__}", version.stdout
    scrub = subprocess.run(
        [script, "scrub", str(directory), "--quiet"], check=True, capture_output=True, text=True
    )
    assert "1,002 rows checked" in scrub.stdout, scrub.stdout


def main() -> None:
    """Runs every check; an AssertionError or a failed command ends it with a traceback."""
    check_installed_not_source()
    with tempfile.TemporaryDirectory(prefix="replikv-smoke-") as scratch:
        directory = Path(scratch) / "store"
        check_store(directory)
        check_command(directory)
    print(f"smoke test passed: replikv {replikv.__version__} from {Path(replikv.__file__).parent}")


if __name__ == "__main__":
    main()
