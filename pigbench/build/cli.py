"""Build the PIGBench dataset: prompts, expand, render, review, annotate, export (each resumable).

Every stage reads and extends one workspace directory (``--workdir``, default ``pigbench-build``);
run them in order. ``pigbench build STAGE --help`` describes a stage.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pigbench.adapter import DatasetError
from pigbench.build.expanders import ExpanderError
from pigbench.build.workspace import BuildError
from pigbench.evaluator import RequirementError

STAGES: dict[str, str] = {
    "prompts": "pigbench.build.prompts",
    "expand": "pigbench.build.expand",
    "render": "pigbench.build.render",
    "review": "pigbench.build.review",
    "annotate": "pigbench.build.annotate.cli",
    "export": "pigbench.build.export",
}

EPILOG = """examples:
  pigbench build prompts -n 100 --seed 0
  pigbench build expand --api-base http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
  pigbench build render --model stabilityai/stable-diffusion-xl-base-1.0 --batch-size 4
  pigbench build review                      # opens http://127.0.0.1:8765/
  pigbench build annotate init && pigbench build annotate invite --count 75 && pigbench build annotate serve
  pigbench build export --out pigbench-v1
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--workdir", default="pigbench-build", help="build workspace directory (default pigbench-build)")
    sub = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip()
        stage = sub.add_parser(name, help=doc.splitlines()[0].split(": ", 1)[-1] if doc else "", description=doc,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        stage.add_argument("--workdir", default=argparse.SUPPRESS, help="build workspace (also accepted before STAGE)")
        module.add_arguments(stage)
        stage.set_defaults(_stage_main=module.main)


def main(args: argparse.Namespace) -> int:
    try:
        return int(args._stage_main(args) or 0)
    except (BuildError, DatasetError, ExpanderError, RequirementError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("build"))
