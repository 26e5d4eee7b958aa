"""Wall time and peak memory of `pigbench validate`, `pigbench report` and `pigbench leaderboard build`
on a large synthetic results tree, at this tree's code and at a baseline revision, in one invocation.

The tree is written by :func:`pigbench.synthetic_results.make_results`, which writes the tests'
results files too (valid results through :func:`pigbench.results.write_results`, metrics from
:func:`pigbench.metrics.compute_metrics`), here large: ``--datasets`` datasets x ``--sizes``
reference sizes x 4 evaluators (a scalar scorer without references, a scalar scorer with
references, a similarity metric, and a reasoning judge whose predictions carry a rationale and
three named dimensions). Everything is drawn from seeded generators, so the same arguments write
the same bytes; nothing needs the network.

Each command runs in a fresh subprocess (start-up and imports included) with ``PYTHONPATH`` set to
the code measured: this checkout, or ``pigbench/`` of ``--baseline`` exported with ``git archive``
(its templates and static files come from this checkout: the editable install maps them). Peak RSS
is the child's own ``ru_maxrss``. The report uses TF-IDF embeddings (``--embedding-model tfidf``).
The outputs of the two revisions are compared file by file (SVG figures excluded: matplotlib
stamps them with the time and random ids) and any difference is printed.

    python benchmarks/report_scale.py --root /tmp/report_scale [--files-per-dataset 12 --predictions 100000]
    python benchmarks/report_scale.py --root /tmp/report_scale --generate-only
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS_PER_USER = 60
WORDS = ("warm", "cool", "muted", "vivid", "soft", "sharp", "busy", "calm", "dark", "bright", "retro", "glossy")
ASPECTS = ("palette", "lighting", "composition", "texture", "focus", "background", "realism", "mood", "style", "detail")
DIMENSION_NAMES = tuple(f"{word} {aspect}".title() for word in WORDS for aspect in ASPECTS)
RATIONALE = ("The chosen image matches the user's liking for the palette and lighting of their references; "
             "the other leans on what their references avoid (case {}).")
EVALUATORS = (  # name, kind, uses references, accuracy, carries rationales and dimensions
    ("clip-score", "scalar", False, 0.58, False),
    ("pick-score-ref", "scalar", True, 0.63, False),
    ("clip-similarity", "similarity", True, 0.61, False),
    ("lvlm-judge", "reasoning", True, 0.66, True),
)


def write_run(root: Path, dataset: str, evaluator: tuple, k: int, predictions: int, n_bootstrap: int) -> Path:
    """One valid results file (and its predictions JSONL) under ``root/<dataset>/``: users of
    :data:`TARGETS_PER_USER` targets; a reasoning judge's predictions carry a rationale and three of
    the user's five dimensions (drawn from :data:`DIMENSION_NAMES`)."""
    from pigbench.synthetic_results import make_results

    name, kind, uses_references, accuracy, reasoning = evaluator
    return make_results(
        root, name, dataset, kind=kind, uses_references=uses_references, variant=f"k{k}", per_user=TARGETS_PER_USER,
        predictions=predictions, accuracy=accuracy, reference_size=k, n_bootstrap=n_bootstrap,
        rationale=RATIONALE.format if reasoning else None, dimensions=3 if reasoning else 0,
        dimension_names=DIMENSION_NAMES)


def generate(root: Path, datasets: int, sizes: list[int], predictions: int, n_bootstrap: int) -> list[Path]:
    """Write the tree (``datasets`` x ``sizes`` x :data:`EVALUATORS` results files); returns their paths."""
    return [write_run(root, f"pickapic-{d}", ev, k, predictions, n_bootstrap)
            for d in range(datasets) for k in sizes for ev in EVALUATORS]


def timed(args: list[str], pythonpath: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one ``pigbench`` command in a fresh subprocess importing from
    ``pythonpath`` (also its working directory: ``python -c`` puts that first on ``sys.path``)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from pigbench.cli import main; sys.exit(main())", *args],
                            env=env, cwd=pythonpath, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"pigbench {' '.join(args)} failed:\n{stderr.decode()}")
    return wall, usage.ru_maxrss / 1024  # KiB on Linux


def export_baseline(rev: str, into: Path) -> Path:
    """``pigbench/`` of git revision ``rev`` extracted under ``into``; returns the folder to put on PYTHONPATH."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "pigbench"], check=True, capture_output=True).stdout
    tar = into / "baseline.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    tar.unlink()
    return into


def differing_files(a: Path, b: Path) -> list[str]:
    """Files (relative paths) that differ between two output folders or exist in one only; SVGs skipped."""
    names = {p.relative_to(root).as_posix() for root in (a, b) for p in root.rglob("*") if p.is_file()}
    return sorted(n for n in names if not n.endswith(".svg")
                  and not ((a / n).is_file() and (b / n).is_file() and filecmp.cmp(a / n, b / n, shallow=False)))


def main() -> None:
    from _args import positive_int, positive_ints
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="work folder (the results tree and outputs go here)")
    parser.add_argument("--datasets", type=positive_int, default=2)
    parser.add_argument("--sizes", type=positive_ints, default=[1, 2, 4], help="reference sizes (K) per dataset")
    parser.add_argument("--predictions", type=positive_int, default=100_000, help="predictions per results file")
    parser.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples stored (validation redoes them)")
    parser.add_argument("--baseline", default="df4a007", help="git revision whose pigbench/ is the baseline")
    parser.add_argument("--generate-only", action="store_true", help="write the tree and stop")
    parser.add_argument("--commands", default="validate,report,leaderboard", help="which commands to time")
    a = parser.parse_args()
    a.root = a.root.resolve()  # the commands run in the measured code's folder
    results = a.root / "results"
    if not results.is_dir():
        start = time.perf_counter()
        files = generate(results, a.datasets, a.sizes, a.predictions, a.bootstrap)
        size = sum(p.stat().st_size for p in results.rglob("*") if p.is_file())
        print(f"wrote {len(files)} results files of {a.predictions} predictions ({size / 2**30:.2f} GiB) "
              f"in {time.perf_counter() - start:.0f} s")
    files = sorted(str(p) for p in results.rglob("*.json"))
    if a.generate_only:
        return
    codes = {"baseline": export_baseline(a.baseline, a.root / "baseline"), "this tree": REPO}
    timings: dict[tuple[str, str], tuple[float, float]] = {}
    for command in a.commands.split(","):
        for code, path in codes.items():
            out = a.root / "out" / code.replace(" ", "_") / command
            shutil.rmtree(out, ignore_errors=True)
            args = {"validate": ["validate", *files],
                    "report": ["report", "--results", str(results), "--out", str(out), "--embedding-model", "tfidf"],
                    "leaderboard": ["leaderboard", "build", "--results", str(results), "--out", str(out)]}[command]
            timings[command, code] = timed(args, path)
            wall, rss = timings[command, code]
            print(f"{command:12s} {code:10s} {wall:8.1f} s  peak RSS {rss:8.0f} MiB", flush=True)
        if command != "validate":
            diff = differing_files(*(a.root / "out" / code.replace(" ", "_") / command for code in codes))
            print(f"{command:12s} outputs {'identical' if not diff else 'DIFFER: ' + ', '.join(diff)}")
        (w0, r0), (w1, r1) = timings[command, "baseline"], timings[command, "this tree"]
        print(f"{command:12s} this tree vs baseline: time x{w1 / w0:.2f}, peak RSS x{r1 / r0:.2f}")


if __name__ == "__main__":
    main()
