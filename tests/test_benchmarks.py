"""The scripts in ``benchmarks/``: how they fail where what they measure cannot run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script", ["sdxl_render.py", "judge_throughput.py", "pigreward_throughput.py",
                                    "scalar_throughput.py", "data_parallel.py"])
def test_gpu_benchmark_without_cuda_is_one_line(script):
    """A GPU benchmark on a machine without CUDA exits at once with one line, not a traceback."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=BENCHMARKS.parent)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("--device cuda: torch ") and "sees no CUDA GPU" in lines[0], lines
    assert "wrote" not in proc.stdout  # nothing done before the check (scalar_throughput writes JPEGs first)


def test_demo_run_refuses_fewer_targets_than_asked():
    """Too few demo users for --targets: said in one line, not reported as the asked-for count."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "demo_run.py"), "--targets", "500", "--users", "3"],
                          capture_output=True, text=True, timeout=300, cwd=BENCHMARKS.parent)
    assert proc.returncode == 1 and "500 targets" not in proc.stdout
    assert proc.stderr.strip() == "3 demo users give only 120 targets, not --targets 500: raise --users"
