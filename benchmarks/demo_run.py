"""Wall time and peak memory of the demo run, and of a fully cached re-run of 10,000 demo targets.

Each measurement runs `python -m pigbench.run` in a fresh subprocess (so start-up and imports
count) and reads the child's peak RSS. The cached re-run is compared with the uncached run of
the same 10,000 targets measured in the same invocation.

    python benchmarks/demo_run.py [--evaluator color-reference] [--targets 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def timed_run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one `python -m pigbench.run` subprocess."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pigbench.run", "--no-progress", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"run failed:\n{stderr.decode()}")
    return wall, usage.ru_maxrss / 1024  # KiB on Linux


def targets_run(output: str) -> int:
    """The number of targets scored, from the one results file under ``output``."""
    (path,) = [os.path.join(d, f) for d, _, files in os.walk(output) for f in files if f.endswith(".json")]
    with open(path) as f:
        return json.load(f)["metrics"]["n"]


def main() -> None:
    from _args import positive_int
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluator", default="color-reference")
    parser.add_argument("--targets", type=positive_int, default=10_000)
    parser.add_argument("--users", type=positive_int, default=300, help="demo users for the large run (enough for --targets)")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--evaluator", a.evaluator, "--output", os.path.join(tmp, "results")]
        demo_wall, demo_rss = timed_run([*common, "--cache-dir", os.path.join(tmp, "c1")])
        big_out = os.path.join(tmp, "big")
        big = ["--evaluator", a.evaluator, "--output", big_out, "--cache-dir", os.path.join(tmp, "c2"),
               "--dataset-option", f"users={a.users}", "--limit", str(a.targets), "--batch-size", "64"]
        cold_wall, _ = timed_run(big)
        targets = targets_run(big_out)
        if targets < a.targets:
            sys.exit(f"{a.users} demo users give only {targets} targets, not --targets {a.targets}: raise --users")
        warm_wall, warm_rss = timed_run(big)
    print(f"demo run ({a.evaluator}, default demo): {demo_wall:.2f} s wall, peak RSS {demo_rss:.0f} MiB")
    print(f"{targets} targets uncached: {cold_wall:.2f} s; fully cached re-run: {warm_wall:.2f} s, "
          f"peak RSS {warm_rss:.0f} MiB; speed-up {cold_wall / warm_wall:.1f}x")
    print(f"targets: demo run < 60 s -> {'met' if demo_wall < 60 else 'MISSED'}; "
          f"cached re-run < 3 s -> {'met' if warm_wall < 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
