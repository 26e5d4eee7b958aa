"""Served judges: the ``openai-judge`` through the runner against 1 and N simulated OpenAI-compatible
servers on 127.0.0.1, and against N servers one of which dies mid-run, measured in the same run.

Each simulated server models a GPU deployment of fixed capacity: at most ``--slots`` requests are
processed at once, each for ``--latency-s`` seconds (more wait in its queue). The judge keeps
``--concurrency`` requests in flight, so one server is the bottleneck and N servers should give
close to N times its throughput when the pool balances the load. The same run key is used with a
fresh cache each time (no request is answered from the cache).

    python benchmarks/served_pool.py                  # 2 servers, 108 targets
    python benchmarks/served_pool.py --servers 4 --users 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from pigbench.judging.fake_server import FakeServer, keyed_verdict
from pigbench.runner import RunConfig, run


def simulated_server(a: argparse.Namespace, die_after: Optional[int] = None) -> FakeServer:
    """A judge deployment: ``--slots`` requests processed at a time, ``--latency-s`` each; after
    ``die_after`` answers it drops every connection and stops listening."""
    return FakeServer(keyed_verdict, latency_s=a.latency_s, slots=a.slots, die_after=die_after)


def measure(a: argparse.Namespace, servers: list[FakeServer], root: Path, name: str) -> dict[str, Any]:
    config = RunConfig(evaluator="openai-judge", dataset="demo", dataset_options={"users": str(a.users)},
                       batch_size=a.concurrency, output=str(root / name / "results"),
                       cache_dir=str(root / name / "cache"), progress=False, n_bootstrap=100,
                       options={"base_url": ",".join(s.url for s in servers), "concurrency": str(a.concurrency),
                                "model_path": "served-judge"})
    start = time.perf_counter()
    outcome = run(config)
    seconds = time.perf_counter() - start
    answered = sum((s.answered for s in servers), Counter())
    return {"variant": name, "servers": len(servers), "seconds": round(seconds, 2),
            "targets": outcome.results["metrics"]["n"], "failures": outcome.results["failures"]["count"],
            "answers_per_server": [sum(s.answered.values()) for s in servers],
            "requests_answered_twice": sum(1 for n in answered.values() if n > 1),
            "predictions": outcome.results_path.with_name(outcome.results_path.stem + ".predictions.jsonl").read_text()}


def main() -> None:
    from _args import positive_int
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=positive_int, default=2)
    ap.add_argument("--slots", type=positive_int, default=1, help="requests a server processes at once")
    ap.add_argument("--latency-s", type=float, default=0.25, help="seconds per request on a server")
    ap.add_argument("--concurrency", type=positive_int, default=64, help="requests the judge keeps in flight")
    ap.add_argument("--users", type=positive_int, default=2, help="demo users (about 40 targets each)")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pigbench-served-"))
    rows = [measure(a, [simulated_server(a)], root, "one server"),
            measure(a, [simulated_server(a) for _ in range(a.servers)], root, f"{a.servers} servers")]
    dying = [simulated_server(a, die_after=rows[0]["targets"] // (2 * a.servers))] + [
        simulated_server(a) for _ in range(a.servers - 1)]
    rows.append(measure(a, dying, root, f"{a.servers} servers, one dies"))
    base = rows[0]["seconds"]
    same = [r.pop("predictions") for r in rows]
    for r in rows:
        r["speedup"] = round(base / r["seconds"], 2)
        r["predictions_equal_one_server"] = same[rows.index(r)] == same[0]
        print(json.dumps(r))
    ideal = rows[0]["targets"] * a.latency_s / a.slots
    print(f"\nSUMMARY: {rows[0]['targets']} targets, servers of {a.slots} slots x {a.latency_s} s "
          f"(one server's floor {ideal:.1f} s): " + "; ".join(f"{r['variant']} {r['seconds']} s ({r['speedup']}x)" for r in rows))


if __name__ == "__main__":
    main()
