"""Write a ready-to-fill evaluator plug-in package: ``pigbench new-evaluator NAME [--kind K]``.

The package (``pigbench-NAME/`` by default) holds a ``pyproject.toml`` declaring the
``pigbench.evaluators`` entry point, the evaluator module (``pigbench_NAME/evaluator.py``) with a
weight-free placeholder model and a ``TODO`` wherever the author must fill something in, a test
that runs the conformance checks, and a README. As generated it installs, passes its own tests
and runs on the demo. Kinds: ``scalar`` (one score per prompt and image), ``similarity`` (image
embeddings compared with the user's references), ``judge`` (a vision-language model answers A or
B given the references) and ``reasoning`` (a judge that writes user-specific dimensions first).

The templates live in ``pigbench/templates/evaluator_plugin/``.
"""

from __future__ import annotations

import argparse
import re
import string
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import pigbench
from pigbench.registry import RegistryError, evaluators

KINDS = ("scalar", "similarity", "judge", "reasoning")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


class ScaffoldError(ValueError):
    """The name or the output directory cannot be used; the message says why."""


@dataclass(frozen=True)
class PluginNames:
    """Every name the package uses, derived from the evaluator name (e.g. ``my-reward``)."""

    name: str  # my-reward: the registry name (--evaluator my-reward)
    dist: str  # pigbench-my-reward: the distribution (pip install pigbench-my-reward)
    package: str  # pigbench_my_reward: the import package
    class_name: str  # MyReward
    env_var: str  # MY_REWARD_MODEL: the environment variable pointing to the weights

    @classmethod
    def of(cls, name: str) -> "PluginNames":
        if not NAME_PATTERN.fullmatch(name):
            raise ScaffoldError(f"evaluator name {name!r} must be lower-case letters, digits and single hyphens, "
                                "starting with a letter (e.g. my-reward)")
        parts = name.split("-")
        return cls(name, f"pigbench-{name}", "pigbench_" + "_".join(parts), "".join(p.capitalize() for p in parts),
                   "_".join(parts).upper() + "_MODEL")


def plugin_files(names: PluginNames, kind: str) -> dict[str, str]:
    """The package's files: relative path -> text."""
    if kind not in KINDS:
        raise ScaffoldError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    values = {**vars(names), "kind": kind, "pigbench_version": pigbench.__version__}
    templates = resources.files("pigbench").joinpath("templates/evaluator_plugin")

    def render(template: str) -> str:
        return string.Template(templates.joinpath(template).read_text("utf-8")).substitute(values)

    return {
        "pyproject.toml": render("pyproject.toml.tmpl"),
        "README.md": render("README.md.tmpl"),
        f"{names.package}/__init__.py": render("package_init.py.tmpl"),
        f"{names.package}/evaluator.py": render(f"{kind}.py.tmpl"),
        "tests/test_conformance.py": render("test_conformance.py.tmpl"),
    }


def write_plugin(name: str, kind: str = "scalar", out: Optional[Path] = None) -> tuple[Path, list[Path]]:
    """Write the package into ``out`` (default ``./pigbench-NAME``), which must not exist or be
    empty. Refuses a name that an installed or built-in evaluator already has."""
    names = PluginNames.of(name)
    if name in evaluators.names():
        raise ScaffoldError(f"evaluator name {name!r} is taken ({evaluators.source(name)}); choose another")
    files = plugin_files(names, kind)
    root = Path(out) if out is not None else Path(names.dist)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root} already exists and is not an empty directory")
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return root, written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="evaluator name, e.g. my-reward (lower case, digits, hyphens)")
    p.add_argument("--kind", choices=KINDS, default="scalar", help="template to start from (default scalar)")
    p.add_argument("--out", type=Path, help="directory to create (default ./pigbench-NAME)")


def main(args: argparse.Namespace) -> int:
    try:
        root, written = write_plugin(args.name, args.kind, args.out)
    except (ScaffoldError, RegistryError) as exc:  # RegistryError: installed plug-ins clash, so no name is known free
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = PluginNames.of(args.name)
    print(f"wrote {root}/ ({args.kind} evaluator {args.name!r}):")
    for path in written:
        print(f"  {path.relative_to(root)}")
    steps = [
        (f"pip install -e {root}", f"registers {args.name!r} through its entry point"),
        (f"pigbench check-evaluator {args.name}", "passes as generated, with the placeholder model"),
        (f"edit {root / names.package / 'evaluator.py'}", "fill in every TODO, then check again"),
        (f"pytest {root}", "the conformance checks as a test"),
        (f"pigbench run --evaluator {args.name} --dataset demo", "a first results file"),
    ]
    width = max(len(cmd) for cmd, _ in steps)
    print("\nnext:")
    for cmd, why in steps:
        print(f"  {cmd.ljust(width)}  # {why}")
    print("CONTRIBUTING.md in pigbench says how to submit results.")
    return 0
