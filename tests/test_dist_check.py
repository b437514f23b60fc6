"""dev/check_dist.py refuses a broken wheel or sdist, naming what is wrong.

dev/check runs that script on the real release wheel and sdist; these tests make sure it
would fail on a wheel with the wrong tags or without its extension, and on an sdist that
lacks a file the build needs or carries build output.
"""

from __future__ import annotations

import io
import platform
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
import check_dist  # noqa: E402

RELEASE_NAME = (
    f"replikv-0.1.0-cp310-abi3-manylinux2014_{platform.machine()}"
    f".manylinux_2_17_{platform.machine()}.whl"
)


def make_wheel(
    directory: Path, name: str = RELEASE_NAME, *, leave_out: str = "", script: str = "replikv"
) -> Path:
    """A wheel file laid out as maturin lays out replikv's, less the member `leave_out`."""
    wheel = directory / name
    dist_info = "replikv-0.1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member in check_dist.WHEEL_MEMBERS:
            if member != leave_out:
                archive.writestr(member, b"")
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n")
        archive.writestr(
            f"{dist_info}/entry_points.txt", f"[console_scripts]\n{script}=replikv.cli:main\n"
        )
    return wheel


def make_sdist(directory: Path, *, leave_out: str = "", extra: str = "", changed: str = "") -> Path:
    """An sdist holding every file the check asks for with the checkout's contents, less
    `leave_out`, plus an empty `extra`, with one line added to `changed`."""
    tracked = subprocess.run(
        ["git", "ls-files", "src", "python"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    members = [*check_dist.SDIST_MEMBERS, *tracked, *([extra] if extra else [])]
    sdist = directory / "replikv-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for member in members:
            if member == leave_out:
                continue
            content = (ROOT / member).read_bytes() if (ROOT / member).is_file() else b""
            content += b"// changed\n" if member == changed else b""
            info = tarfile.TarInfo(f"replikv-0.1.0/{member}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return sdist


def test_a_wheel_with_the_release_tags_and_files_passes(tmp_path: Path) -> None:
    assert check_dist.wheel_problems(make_wheel(tmp_path)) == []


def test_a_local_linux_wheel_is_refused_for_its_tags(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "replikv-0.1.0-cp311-cp311-linux_x86_64.whl")
    problems = "\n".join(check_dist.wheel_problems(wheel))
    assert "expected replikv-*-cp310-abi3-*" in problems
    assert f"lack manylinux_2_17_{platform.machine()}" in problems


def test_a_wheel_without_the_extension_or_the_command_is_refused(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, leave_out="replikv/_core.abi3.so", script="other")
    assert check_dist.wheel_problems(wheel) == [
        f"{RELEASE_NAME} lacks replikv/_core.abi3.so",
        f"{RELEASE_NAME} does not install the replikv command",
    ]


def test_a_complete_sdist_passes(tmp_path: Path) -> None:
    assert check_dist.sdist_problems(make_sdist(tmp_path)) == []


def test_an_sdist_without_the_lock_file_or_with_a_built_extension_is_refused(
    tmp_path: Path,
) -> None:
    sdist = make_sdist(tmp_path, leave_out="Cargo.lock", extra="python/replikv/_core.abi3.so")
    assert check_dist.sdist_problems(sdist) == [
        "replikv-0.1.0.tar.gz lacks Cargo.lock",
        "replikv-0.1.0.tar.gz holds build output: python/replikv/_core.abi3.so",
    ]


def test_an_sdist_whose_source_differs_from_the_checkout_is_refused(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, changed="src/lib.rs")
    assert check_dist.sdist_problems(sdist) == [
        "replikv-0.1.0.tar.gz: src/lib.rs differs from the checkout's"
    ]
