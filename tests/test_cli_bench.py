"""``replikv bench``: replikv next to sqlite3 on this machine, as ratios. Small, quick runs
with real files; no test asserts on a timing (the machine is shared and noisy), only on what
the report says and on what the run leaves behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import replikv
from children import ctrl_c_as_from_a_terminal
from replikv import cli
from replikv._measure import mount_of
from replikv.cli import bench
from replikv.cli.bench_scenarios import Run

SCENARIOS = ["put", "bulk", "get", "scan", "replication"]
SMALL = ["bench", "--quick", "--rows", "300", "--seconds", "0.05"]
TIMEOUT = 120


def check_figures(report: dict[str, Any]) -> None:
    """Every scenario compares at least one figure; every figure is positive; every ratio
    is the one its ``ratio_of`` names, computed from the two reported figures, and
    ``better`` names who is ahead by it."""
    for name, scenario in report["scenarios"].items():
        subject, baseline = scenario["subject"], scenario["baseline"]
        compared = [f for f in scenario["figures"] if f["baseline"] is not None]
        assert compared, f"{name} compares nothing"
        for figure in scenario["figures"]:
            assert figure["replikv"] > 0, (name, figure)
            if figure["baseline"] is None:
                assert figure["ratio"] is None and figure["baseline_value"] is None
                continue
            ours, theirs = figure["replikv"], figure["baseline_value"]
            assert theirs > 0, (name, figure)
            assert figure["baseline"] == baseline
            if figure["better_is"] == "higher":
                assert figure["ratio_of"] == f"{subject}/{baseline}"
                assert figure["ratio"] == pytest.approx(ours / theirs)
            else:
                assert figure["better_is"] == "lower"
                assert figure["ratio_of"] == f"{baseline}/{subject}"
                assert figure["ratio"] == pytest.approx(theirs / ours)
            ahead = subject if figure["ratio"] > 1 else baseline
            assert figure["better"] == ahead or figure["ratio"] == 1, (name, figure)


def measures(report: dict[str, Any], scenario: str) -> list[str]:
    return [figure["measure"] for figure in report["scenarios"][scenario]["figures"]]


def leftovers(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def test_bench_json_reports_every_scenario_with_both_figures_and_their_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main([*SMALL, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["scenarios"]) == SCENARIOS
    check_figures(report)
    for name in ("put", "bulk", "get", "scan"):
        assert report["scenarios"][name]["baseline"] == "sqlite3"
    assert report["scenarios"]["replication"]["baseline"] == "no replica"
    assert measures(report, "put") == ["throughput", "p50 latency", "p99 latency"]
    assert measures(report, "replication") == [
        "async put throughput",
        "sync put p50 latency",
        "sync put p99 latency",
        "replica lag after a burst",
    ]
    assert "synchronous=FULL" in report["durability"]["sqlite3"]
    assert report["settings"]["rows"] == 300 and report["settings"]["quick"] is True
    mount = mount_of(tmp_path)
    assert mount is not None and report["filesystem"]["kind"] == mount.kind


def test_bench_as_a_command_reports_the_same_figures_and_leaves_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "replikv", *SMALL, "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["scenarios"]) == SCENARIOS
    check_figures(report)
    assert Path(report["directory"]).parent == tmp_path, "by default, in the current directory"
    assert leftovers(tmp_path) == []


def test_bench_table_says_the_durability_of_both_sides_and_who_is_ahead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*SMALL, "--dir", str(tmp_path / "run"), "--only", "put", "replication"]) == 0
    out = capsys.readouterr().out
    assert "sqlite3: journal_mode=WAL, synchronous=FULL" in out
    assert "replikv: fsync=True" in out
    assert "\nput: " in out and "\nreplication: " in out and "\nbulk: " not in out
    table = out.split("\nput: ", 1)[1]
    ratio = r"(?:(\S+) \d+\.\d\dx (faster|lower)|about equal)"
    ratios = re.findall(rf"^  \S.* {ratio}$", table, re.MULTILINE)
    # put: rate, p50, p99; replication: rate, p50, p99, each naming who is ahead
    assert len(ratios) == 6, table
    for (who, word), expected in zip(ratios, ["faster", "lower", "lower"] * 2, strict=True):
        assert (who, word) == ("", "") or word == expected, ratios
        assert who in ("", "replikv", "sqlite3", "replica"), ratios
    assert re.search(
        r"^  replica lag after a burst .* \(nothing to compare\)$", table, re.MULTILINE
    )


def test_only_runs_the_scenarios_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "kept"
    assert cli.main([*SMALL, "--json", "--keep", "--dir", str(kept), "--only", "scan", "put"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["scenarios"]) == ["put", "scan"]
    check_figures(report)
    # What ran left its files (--keep); the replication and bulk scenarios left none.
    assert leftovers(kept) == [".replikv-bench", "loaded", "put"]


def test_an_unknown_scenario_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main([*SMALL, "--only", "put", "nope"]) == 2
    captured = capsys.readouterr()
    assert "argument --only: invalid choice: 'nope'" in captured.err
    assert captured.out == "" and leftovers(tmp_path) == []


def test_bench_removes_a_dir_it_created_and_empties_one_it_was_given(tmp_path: Path) -> None:
    new, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    for directory in (new, empty):
        assert cli.main([*SMALL, "--only", "put", "get", "--dir", str(directory)]) == 0
    assert not new.exists()
    assert leftovers(empty) == []


def test_kept_stores_open_and_a_later_run_reuses_their_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "kept"
    assert cli.main([*SMALL, "--only", "bulk", "--keep", "--dir", str(kept)]) == 0
    assert f"kept: {kept}" in capsys.readouterr().out
    with replikv.Store(kept / "loaded" / "replikv") as store:
        assert store.count("profiles") == 300
    # The directory holds only what a run left: the next run may use it, and cleans it.
    assert cli.main([*SMALL, "--only", "put", "--dir", str(kept)]) == 0
    assert leftovers(kept) == []


def test_a_failing_scenario_still_removes_what_the_run_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_after_writing(run: Run) -> Any:
        with replikv.Store(run.part("loaded") / "replikv") as store:
            store.put("profiles", "ana@example.com", {"name": "Ana"})
        raise OSError("the disk went away")

    monkeypatch.setitem(bench.SCENARIOS, "get", fail_after_writing)
    monkeypatch.chdir(tmp_path)
    assert cli.main([*SMALL, "--only", "put", "get"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == "replikv bench: error: the disk went away"
    assert "Traceback" not in captured.err and captured.out == ""
    assert leftovers(tmp_path) == []


def test_ctrl_c_stops_the_run_removes_its_files_and_says_so_in_one_line(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "replikv", "bench", "--quick"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_from_a_terminal,
    ) as child:
        try:
            assert child.stderr is not None and child.stdout is not None
            first = child.stderr.readline()
            assert first.startswith("replikv bench: put, bulk"), first
            (workspace,) = tmp_path.iterdir()
            assert workspace.name.startswith("replikv-bench-"), "the run's directory is made"
            child.send_signal(signal.SIGINT)
            code = child.wait(timeout=TIMEOUT)
            err, out = child.stderr.read(), child.stdout.read()
        finally:
            child.kill()
    assert code == 130, err
    assert err.splitlines()[-1] == "replikv bench: interrupted"
    assert "Traceback" not in err and out == ""
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--rows", "0"], "argument --rows: must be at least 1, got 0"),
        (["--rows", "many"], "argument --rows: not a whole number: 'many'"),
        (["--seconds", "0"], "argument --seconds: must be above 0 and at most 3600"),
        (["--dir", "{file}"], "--dir {file} exists and is not a directory"),
        (["--dir", "{project}"], "--dir {project} holds files that are not replikv bench's"),
        (["--dir", "{missing}/run"], "cannot create --dir {missing}/run: No such file"),
    ],
    ids=["rows-zero", "rows-text", "seconds-zero", "dir-file", "dir-foreign", "dir-parent"],
)
def test_bad_arguments_exit_2_with_a_one_line_error(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    places = {"file": tmp_path / "notes.txt", "project": tmp_path / "project"}
    places["missing"] = tmp_path / "missing"
    places["file"].write_text("not a directory\n")
    places["project"].mkdir()
    (places["project"] / "subscribers.csv").write_text("email\n")
    arguments = [argument.format(**places) for argument in arguments]
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    assert cli.main(["bench", *arguments]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == captured.err.splitlines()[-1], captured.err
    assert errors[0].startswith("replikv bench: error: ")
    assert message.format(**places) in errors[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before, "nothing touched"


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or getattr(mount_of(Path("/dev/shm")), "kind", "") != "tmpfs",
    reason="needs /dev/shm on tmpfs",
)
def test_bench_on_tmpfs_warns_that_the_durable_figures_say_nothing_about_a_disk(
    capsys: pytest.CaptureFixture[str],
) -> None:
    directory = Path("/dev/shm") / f"replikv-bench-test-{os.getpid()}"
    assert cli.main([*SMALL, "--only", "put", "--dir", str(directory), "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: the directory is on tmpfs" in captured.err
    assert json.loads(captured.out)["in_memory"] is True
    assert not directory.exists()


def test_mount_of_reads_the_deepest_latest_mount_and_unescapes_its_point(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "30 27 0:27 / /data\\040disk rw - xfs /dev/vdb rw\n"
        "31 27 0:28 / /data\\040disk rw shared:3 - tmpfs tmpfs rw\n"
        "32 27 0:29 / /data rw - btrfs /dev/vdc rw\n"
    )
    spaced = tmp_path / "data disk"
    # mount_of resolves the path it is given: point the fake table at real directories.
    spaced.mkdir()
    text = mountinfo.read_text().replace("/data\\040disk", str(spaced).replace(" ", "\\040"))
    mountinfo.write_text(text.replace(" /data ", f" {tmp_path}/data "))
    inside = mount_of(spaced, mountinfo)
    assert inside is not None and (inside.kind, inside.point) == ("tmpfs", str(spaced))
    assert inside.in_memory
    elsewhere = mount_of(tmp_path, mountinfo)
    assert elsewhere is not None and (elsewhere.kind, elsewhere.device) == ("ext4", "/dev/vda")
    assert mount_of(tmp_path, tmp_path / "absent") is None


def test_help_describes_every_scenario_and_the_equal_durability(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["bench", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for name in SCENARIOS:
        assert f" {name}: " in shown, name
    for words in ("synchronous=FULL", "fsync=True", "127.0.0.1", "about 30 s", "tmpfs"):
        assert words in shown, words
