"""What a ``replikv primary`` or ``replikv replica`` process does while its role changes
under it: a primary that an operator's switchover (``replikv switchover``) hands over goes
on as the new primary's replica, and a replica that a switchover promotes serves as the
primary, until the process is stopped (Ctrl-C or SIGTERM)."""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import ParamSpec, TypeVar

from ._core import Primary, Replica, Switchover

P = ParamSpec("P")
R = TypeVar("R")

#: How often the loops look at their role.
TICK = 0.2


class Stop(Exception):
    """SIGTERM, turned into an exception so that `finally` blocks close what is open."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # The first SIGTERM stops the process; one more while it closes what is open (a
    # supervisor that sends two) would raise out of that cleanup, as a traceback.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop


def stops_on_sigterm(run: Callable[P, R]) -> Callable[P, R]:
    """Runs `run` with SIGTERM raised as `Stop`, and puts the previous handler back when it
    returns: a caller in the same process (a test, a notebook) keeps its own, and a child
    it forks later is not left with a handler that only raises (a pool's `terminate()`
    then waited for ever on a worker that never died)."""

    @functools.wraps(run)
    def stopping(*args: P.args, **kwargs: P.kwargs) -> R:
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            return run(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return stopping


def run_roles(
    role: Primary | Replica,
    every: float,
    report_primary: Callable[[Primary], None],
    report_replica: Callable[[Replica], None],
) -> str | None:
    """Serves or follows as `role` says, switching roles as switchovers go, until stopped
    (returns ``None``) or until replication stops for good (returns why). The roles it
    takes on after `role` are closed when it returns; `role` is the caller's."""
    taken: list[Primary | Replica] = []
    try:
        while True:
            if isinstance(role, Primary):
                switched = serve_until_stopped(role, every, report_primary)
                if switched is None:
                    return None
                print(describe(switched), flush=True)
                role = switched.replica
            else:
                failure = follow_until_stopped(role, every, report_replica)
                promoted = role.promoted
                if promoted is None:
                    return failure
                print(
                    f"promoted by a switchover: serving on {promoted.address} "
                    f"(epoch {promoted.epoch})",
                    flush=True,
                )
                role = promoted
            taken.append(role)
    finally:
        for later in reversed(taken):
            later.close()


def describe(switched: Switchover) -> str:
    replica = switched.replica
    return (
        f"handed over to {switched.to!r} at {switched.address} (epoch {switched.epoch}, "
        f"writes paused {switched.paused * 1000:.1f} ms); following it as {replica.name!r}, "
        f"answering members at {replica.listen_address}"
    )


def serve_until_stopped(
    primary: Primary, every: float, report: Callable[[Primary], None]
) -> Switchover | None:
    """Serves until interrupted, or until an operator's switchover hands the log to a
    replica: returns that switchover."""
    return poll_until_stopped(primary.serve_switchover_request, every, lambda: report(primary))


@dataclass(frozen=True)
class Ended:
    """Why following ended: `failure` if replication stopped for good, else promoted."""

    failure: str | None


def follow_until_stopped(
    replica: Replica, every: float, report: Callable[[Replica], None]
) -> str | None:
    """Follows until interrupted or promoted (returns ``None``), or until replication stops
    for good: returns why it stopped."""
    told = [""]

    def step() -> Ended | None:
        status = replica.status()
        failure = str(status.last_error)
        if status.state == "promoted":
            return Ended(None)
        if status.state == "failed" and failure.startswith("fenced"):
            # Its primary was deposed: a promotion's lead (or `replikv follow`) re-points
            # it, so it waits rather than exits.
            if failure != told[0]:
                told[0] = failure
                print(f"waiting to be re-pointed: {failure}", flush=True)
            return None
        if status.state == "failed":
            report(replica)
            return Ended(failure)
        return None

    ended = poll_until_stopped(step, every, lambda: report(replica))
    return None if ended is None else ended.failure


T = TypeVar("T")


def poll_until_stopped(
    step: Callable[[], T | None], every: float, report: Callable[[], None]
) -> T | None:
    """Calls `step` every tick until it returns something (returned) or the process is
    interrupted (``None``), reporting every `every` seconds (never if 0)."""
    since_report = 0.0
    try:
        while True:
            time.sleep(TICK)
            outcome = step()
            if outcome is not None:
                return outcome
            since_report += TICK
            if every > 0 and since_report >= every:
                since_report = 0.0
                report()
    except (KeyboardInterrupt, Stop):
        print("stopping", flush=True)
    return None
