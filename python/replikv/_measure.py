"""Measuring on a shared machine: interleaved timed slices, percentiles, and what the disk
under a directory is. Used by ``replikv bench`` and by the repository's ``benches/``.

A noisy neighbour (another process's I/O, a busy hypervisor) slows whatever runs while it
is busy. Two systems compared in turns of short slices, the order rotated every round,
share its slow and fast moments alike; a median over the slices then drops the worst.
"""

from __future__ import annotations

import gc
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: File systems in memory: an fsync there costs nothing, so durable figures say nothing
#: about a disk.
MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})


def timed(fn: Callable[[], object]) -> float:
    """Seconds taken by ``fn()``, after a garbage collection so that neither side pays for
    the other's garbage."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass(frozen=True)
class Slice:
    """What one timed slice did: ``operations`` in ``seconds``, and each step's duration."""

    operations: int
    seconds: float
    step_seconds: list[float]
    #: ``time.perf_counter()`` when its last step returned.
    ended: float

    @property
    def rate(self) -> float:
        """Operations per second."""
        return self.operations / self.seconds


def timed_slice(step: Callable[[], int], seconds: float) -> Slice:
    """Calls ``step()`` (which returns how many operations it did) until ``seconds`` have
    passed, at least once, after a garbage collection; each call is timed on its own."""
    gc.collect()
    clock = time.perf_counter
    steps: list[float] = []
    operations = 0
    start = now = clock()
    deadline = start + seconds
    while True:
        operations += step()
        after = clock()
        steps.append(after - now)
        now = after
        if now >= deadline:
            return Slice(operations, now - start, steps, now)


def interleaved(
    sides: Sequence[tuple[str, Callable[[], T]]],
    rounds: int,
    after_each: Callable[[], object] | None = None,
) -> dict[str, list[T]]:
    """Runs every side once per round, starting each round one side further on (A B, B A,
    A B, ...), and returns each side's results in the order they ran; ``after_each`` is
    called after every run (a progress bar's step)."""
    results: dict[str, list[T]] = {name: [] for name, _ in sides}
    for round_number in range(rounds):
        for offset in range(len(sides)):
            name, run = sides[(round_number + offset) % len(sides)]
            results[name].append(run())
            if after_each is not None:
                after_each()
    return results


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    # p * n first: p / 100 * n drifts (0.07 * 100 is 7.000000000000001, ceil 8).
    rank = max(1, math.ceil(p * len(sorted_values) / 100))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Mount:
    """The file system a path is on: its type (``ext4``, ``tmpfs``, ...), mount point and
    device."""

    kind: str
    point: str
    device: str

    @property
    def in_memory(self) -> bool:
        return self.kind in MEMORY_FILE_SYSTEMS


def _unescaped(field: str) -> str:
    # The kernel writes a space in a mount point as \040, a tab as \011, and so on.
    return re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal[1], 8)), field)


def _holds(point: str, path: str) -> bool:
    return path == point or path.startswith(point.rstrip("/") + "/")


def mount_of(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> Mount | None:
    """The mount that holds ``path`` (which must exist), from Linux's ``mountinfo``;
    ``None`` where there is none to read (another system)."""
    real = os.path.realpath(path)
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    found: Mount | None = None
    for line in lines:
        # "36 35 98:0 /root /mnt rw,noatime shared:1 - ext4 /dev/vda1 rw": the mount
        # point is the fifth field; the type and the device follow the lone "-".
        fields = line.split()
        if "-" not in fields[5:]:
            continue
        separator = fields.index("-", 5)
        if len(fields) < separator + 3:
            continue
        point = _unescaped(fields[4])
        # Later lines are later mounts: one over the same point hides the earlier one.
        if _holds(point, real) and (found is None or len(point) >= len(found.point)):
            found = Mount(fields[separator + 1], point, _unescaped(fields[separator + 2]))
    return found


def filesystem_of(path: Path) -> str:
    """The device, mount point and type holding ``path``, as one phrase."""
    mount = mount_of(path)
    if mount is None:
        return "unknown"
    return f"{mount.device} on {mount.point} ({mount.kind})"


def machine_load() -> str:
    """Load average and I/O pressure: other work on the machine moves fsync-bound figures."""
    parts = []
    with suppress(OSError):
        parts.append("loadavg " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    with suppress(OSError, IndexError):
        some = Path("/proc/pressure/io").read_text().splitlines()[0].split()
        parts.append("io pressure " + " ".join(some[1:3]))
    return ", ".join(parts) or "unknown"
