"""Kill-point fuzzing of ``python -m pigbench.run``: SIGKILLed again and again at seeded moments,
then resumed with the same command, a run ends with the results of one uninterrupted run.

The moments (:func:`kill_plans`) cover each phase of a run on the demo with ``color-reference``
(about 1 s on 2 cores): the interpreter's start, the imports and the split (a seeded share of an
uninterrupted run's time after the start), the store's creation (as soon as its file appears),
the predictions (once the store has committed a seeded number of rows), the results
write (the process kills itself in a file write of ``write_results``: mid-way through the
predictions file, as the results JSON begins, mid-way through the results JSON; a timed kill
could not land in that window of a few milliseconds every time), and a rerun killed
at a seeded delay around its end. A kill that lands after the run finished is no failure: the
run completed, and the next one reuses it. After every kill the store holds only predictions
equal to the uninterrupted run's, never fewer than before, and any results file present
validates (no torn file is ever visible).

Fields that legitimately differ between the two runs' results files: ``provenance.created_at``,
``provenance.wall_time_s`` and ``provenance.resumed_samples``.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pigbench.results import validate_results

SEED = 20261127
USERS = 8  # 360 targets, about 1 s a run
RUN_ARGS = ["--dataset-option", f"users={USERS}", "--batch-size", "4", "--output", "results", "--cache-dir", "cache"]
RUN = [sys.executable, "-m", "pigbench.run", *RUN_ARGS]
DIFFERING_FIELDS = ("created_at", "wall_time_s", "resumed_samples")  # of "provenance"
TIMEOUT = 120

# The same command, killing itself (SIGKILL) in the N-th file write of the results write (1: the
# predictions file, 2: the results JSON) once FRACTION of the data is written. The runner imports
# write_results after this module replaced it.
KILLED_IN_RESULTS_WRITE = """
import os, pathlib, runpy, signal, sys
import pigbench.results
call, fraction = int(sys.argv.pop(1)), float(sys.argv.pop(1))
real_write_results, real_write_bytes, writes = pigbench.results.write_results, pathlib.Path.write_bytes, []
def write_bytes_then_die(self, data):
    writes.append(self)
    if len(writes) == call:
        real_write_bytes(self, data[: int(len(data) * fraction)])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write_bytes(self, data)
def write_results(*args, **kwargs):
    pathlib.Path.write_bytes = write_bytes_then_die
    return real_write_results(*args, **kwargs)
pigbench.results.write_results = write_results
runpy.run_module("pigbench.run", run_name="__main__", alter_sys=True)
"""


def kill_plans(total: int, reference_wall: float, rerun_wall: float) -> list[tuple[str, Any]]:
    """The seeded kill moments, in order: (phase, parameter). ``total``: the run's targets;
    ``reference_wall``, ``rerun_wall``: seconds an uninterrupted run took, and a rerun of it (which
    predicts nothing and writes the results again)."""
    rng = random.Random(SEED)
    return [
        ("after", rng.uniform(0.0, 0.1) * reference_wall),  # seconds after the start: the interpreter's start
        ("after", rng.uniform(0.1, 0.45) * reference_wall),  # the imports, the split
        ("store", None),  # as soon as the store's file exists: SQLite creating it, switching it to WAL
        ("rows", rng.randint(1, total // 4)),  # once the store holds this many predictions
        ("rows", rng.randint(total // 4, total // 2)),
        ("rows", rng.randint(total // 2, 3 * total // 4)),
        ("write", (1, rng.random())),  # predicts the rest, dies writing the predictions file
        ("write", (2, 0.0)),  # a rerun: the predictions file written, the results JSON not yet begun
        ("write", (2, rng.random())),  # a rerun dying mid-way through the results JSON
        ("after", rng.uniform(0.7, 1.1) * rerun_wall),  # a rerun around its results write (or after its end)
    ]


def store_file(cache: Path) -> Optional[Path]:
    found = list((cache / "runs").glob("*.sqlite"))
    return found[0] if found else None


def stored(cache: Path) -> dict[str, dict]:
    """The predictions committed to the run's store, by sample id (none when it has no table yet).
    Read-only: a read-write connection would fold a killed run's WAL into the database on closing,
    sparing the next run the recovery this test is about (the read-only one leaves its -wal and -shm
    files, which the next run's last connection removes)."""
    path = store_file(cache)
    if path is None:
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {sid: json.loads(payload) for sid, payload in db.execute("SELECT sample_id, payload FROM predictions")}
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # killed while creating it
            return {}
        raise
    finally:
        db.close()


def committed_rows(cache: Path) -> int:
    """How many predictions the store holds while a run writes it (0 while it is being created)."""
    try:
        return len(stored(cache))
    except sqlite3.Error:
        return 0


def run_killed(workdir: Path, phase: str, param: Any) -> Optional[int]:
    """Run the command in ``workdir`` and SIGKILL it as ``phase``/``param`` say; its exit status."""
    if phase == "write":
        call, fraction = param
        cmd = [sys.executable, "-c", KILLED_IN_RESULTS_WRITE, str(call), str(fraction), *RUN_ARGS]
        return subprocess.run(cmd, cwd=workdir, capture_output=True, timeout=TIMEOUT).returncode
    proc = subprocess.Popen(RUN, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < TIMEOUT:
        if ((phase == "after" and time.monotonic() - start >= param)
                or (phase == "store" and store_file(workdir / "cache") is not None)
                or (phase == "rows" and committed_rows(workdir / "cache") >= param)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005 if phase == "rows" else 0.0005)
    return proc.wait(timeout=TIMEOUT)


def rows(results_dir: Path) -> list[dict]:
    (path,) = results_dir.glob("*.predictions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def comparable(results_path: Path) -> dict:
    results = json.loads(results_path.read_text())
    for name in DIFFERING_FIELDS:
        del results["provenance"][name]
    return results


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_run_killed_at_seeded_moments_and_resumed_equals_an_uninterrupted_run(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir(), killed.mkdir()
    start = time.monotonic()
    subprocess.run(RUN, cwd=clean, check=True, capture_output=True, timeout=TIMEOUT)
    reference_wall = time.monotonic() - start
    (reference_path,) = (clean / "results" / "demo").glob("*.json")
    reference_rows = rows(clean / "results" / "demo")
    reference = {row["sample_id"]: row["prediction"] for row in reference_rows}
    start = time.monotonic()
    subprocess.run(RUN, cwd=clean, check=True, capture_output=True, timeout=TIMEOUT)
    rerun_wall = time.monotonic() - start

    before: dict[str, dict] = {}
    for phase, param in kill_plans(len(reference), reference_wall, rerun_wall):
        status = run_killed(killed, phase, param)
        where = f"killed at {phase} {param}"
        assert status in (-signal.SIGKILL, 0), f"{where}: exit status {status}"
        now = stored(killed / "cache")
        assert now.keys() >= before.keys(), f"{where}: committed predictions were lost"
        assert all(now[sid] == reference[sid] for sid in now), f"{where}: a stored prediction differs"
        before = now
        for path in (killed / "results" / "demo").glob("*.json"):
            assert validate_results(path) == [], f"{where}: {path.name} is visible torn or mismatched"

    final = subprocess.run(RUN, cwd=killed, capture_output=True, text=True, timeout=TIMEOUT)
    assert final.returncode == 0, final.stderr
    results_path = killed / "results" / "demo" / reference_path.name
    assert rows(killed / "results" / "demo") == reference_rows  # sample ids, labels, scores, gold, in order
    assert comparable(results_path) == comparable(reference_path)  # metrics, split, evaluator, failures, ...
    validate = subprocess.run([sys.executable, "-m", "pigbench.validate", str(results_path)], capture_output=True,
                              text=True, timeout=TIMEOUT)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    # no temporary file, -wal/-shm/-journal or torn store of a killed run is left behind
    assert files(killed / "results") == files(clean / "results")
    assert files(killed / "cache") == files(clean / "cache")
