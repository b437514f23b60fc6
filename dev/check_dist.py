"""Checks replikv's distributions as a user gets them; run by dev/check.

``check_dist.py wheel WHEEL``: the file's tags are cp310-abi3 and manylinux_2_17 for this
machine's architecture, it holds the extension, the stubs and the command, ``auditwheel show``
agrees with the tag, and the wheel installs into a fresh virtualenv where dev/smoke.py passes.

``check_dist.py sdist SDIST``: the archive holds every tracked file of the crate and the
package (Cargo.lock, src/, python/, README.md, LICENSE, ...), its sources byte for byte the
checkout's, and nothing built, and
``pip install SDIST`` into a fresh virtualenv builds it (reusing what the wheel build compiled
in the checkout's target/) and dev/smoke.py passes there.

Exits 1 with what is wrong, so dev/check fails if a distribution is broken.
"""

from __future__ import annotations

import argparse
import configparser
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The oldest glibc the wheel promises (manylinux2014), and the oldest Python (abi3).
MANYLINUX = f"manylinux_2_17_{platform.machine()}"
PYTHON_TAG, ABI_TAG = "cp310", "abi3"
WHEEL_MEMBERS = (
    "replikv/__init__.py",
    "replikv/cli/__init__.py",
    "replikv/_core.abi3.so",
    "replikv/_core.pyi",
    "replikv/py.typed",
)
SDIST_MEMBERS = ("Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "LICENSE", "PKG-INFO")


class DistError(Exception):
    """A distribution is not what users must get."""


def wheel_problems(wheel: Path) -> list[str]:
    """What is wrong with the wheel file itself: its tags and its contents."""
    problems = []
    name, version, python_tag, abi_tag, platform_tags = wheel.name.removesuffix(".whl").split("-")
    if (name, python_tag, abi_tag) != ("replikv", PYTHON_TAG, ABI_TAG):
        problems.append(f"{wheel.name}: expected replikv-*-{PYTHON_TAG}-{ABI_TAG}-*")
    if MANYLINUX not in platform_tags.split("."):
        problems.append(f"{wheel.name}: platform tags {platform_tags!r} lack {MANYLINUX}")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"replikv-{version}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        root_is_purelib = "Root-Is-Purelib: false" in archive.read(f"{dist_info}/WHEEL").decode()
    problems += [f"{wheel.name} lacks {member}" for member in WHEEL_MEMBERS if member not in names]
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points)
    if scripts.get("console_scripts", "replikv", fallback=None) != "replikv.cli:main":
        problems.append(f"{wheel.name} does not install the replikv command")
    if not root_is_purelib:
        problems.append(f"{wheel.name} claims to be pure Python")
    return problems


def auditwheel_problems(wheel: Path) -> list[str]:
    """What ``auditwheel show`` disagrees with: the wheel must be consistent with its tag."""
    auditwheel = Path(sys.executable).parent / "auditwheel"
    shown = subprocess.run([auditwheel, "show", wheel], capture_output=True, text=True)
    verdict = " ".join(shown.stdout.split())
    if shown.returncode != 0 or f'platform tag: "{MANYLINUX}"' not in verdict:
        return [f"auditwheel show {wheel.name}:\n{shown.stdout}{shown.stderr}"]
    return []


def sdist_problems(sdist: Path) -> list[str]:
    """What the sdist lacks or changed (a tracked file of the build) or holds that it must not.

    Its src/ and python/ files must be the checkout's, byte for byte: the install below lets
    cargo reuse the crate the wheel build compiled from the checkout, which is right only for
    the same sources.
    """
    tracked = subprocess.run(
        ["git", "ls-files", "src", "python"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    with tarfile.open(sdist) as archive:
        prefix = archive.getnames()[0].split("/")[0] + "/"
        members = {member.name.removeprefix(prefix): member for member in archive.getmembers()}
        problems = [
            f"{sdist.name} lacks {name}"
            for name in (*SDIST_MEMBERS, *tracked)
            if name not in members
        ]
        for name in tracked:
            stored = archive.extractfile(members[name]) if name in members else None
            if stored is not None and stored.read() != (ROOT / name).read_bytes():
                problems.append(f"{sdist.name}: {name} differs from the checkout's")
    built = sorted(n for n in members if n.endswith(".so") or n.startswith(("target/", ".venv/")))
    if built:
        problems.append(f"{sdist.name} holds build output: {', '.join(built[:5])}")
    return problems


def install_and_smoke(kind: str, path: Path, scratch: Path) -> float:
    """Installs the distribution into a new virtualenv and runs dev/smoke.py there.

    Returns the seconds the install took.
    """
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    # This virtualenv's pip installs into the new one (whose bundled pip may predate --group).
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    env = dict(os.environ)
    if kind == "sdist":
        # pip builds the unpacked sdist (only what it holds) as the release wheel is built:
        # zig for manylinux2014 (a pip build defaults to the local `linux` tag), into the
        # checkout's target/. The sources are the checkout's (sdist_problems), at the same
        # relative paths and older (maturin dates sdist members 2006), so cargo finds the
        # crate the wheel build compiled up to date and only packs it: seconds, not minutes.
        # The reuse needs the same linker, and maturin's zig linker script is named after
        # the maturin that runs: so the build backend comes from pyproject.toml's
        # "build" group without pip's isolated build environment (which would compile every
        # dependency again, 7 minutes), and the `maturin` it runs, like zig
        # (`python3 -m ziglang`), is the one of this script's virtualenv, first on PATH.
        subprocess.run([*pip, "--group", f"{ROOT / 'pyproject.toml'}:build"], check=True)
        # pip would cache the wheel it builds under the sdist's path, and install that cached
        # wheel the next time, whatever the sdist then holds.
        pip += ["--no-build-isolation", "--no-cache-dir"]
        env["CARGO_TARGET_DIR"] = str(ROOT / "target")
        env["MATURIN_PEP517_ARGS"] = "--zig --compatibility manylinux2014"
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    started = time.monotonic()
    subprocess.run([*pip, path], check=True, env=env)
    installed = time.monotonic() - started
    # Run from a directory outside the checkout: only the installed package is importable.
    subprocess.run([python, ROOT / "dev" / "smoke.py"], check=True, cwd=scratch)
    return installed


def check(kind: str, path: Path) -> None:
    """Checks one distribution; raises DistError listing what is wrong."""
    if kind == "wheel":
        problems = wheel_problems(path) + auditwheel_problems(path)
    else:
        problems = sdist_problems(path)
    if problems:
        raise DistError("\n".join(problems))
    with tempfile.TemporaryDirectory(prefix=f"replikv-{kind}-") as scratch:
        seconds = install_and_smoke(kind, path, Path(scratch))
    print(f"{path.name}: installed into a fresh virtualenv in {seconds:.0f} s, smoke test passed")


def main() -> int:
    """Parses the arguments and checks the distribution; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["wheel", "sdist"])
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    try:
        check(args.kind, args.path)
    except (DistError, subprocess.CalledProcessError) as failure:
        print(f"check_dist: {args.path.name} is broken:\n{failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
