"""Write a ready-to-fill evaluator plug-in package: ``pigbench new-evaluator NAME [--kind K]``.

The package (``pigbench-NAME/`` by default) holds a ``pyproject.toml`` declaring the
``pigbench.evaluators`` entry point, the evaluator module (``pigbench_NAME/evaluator.py``) with a
weight-free placeholder model and a ``TODO`` wherever the author must fill something in, a test
that runs the conformance checks, and a README. As generated it installs, passes its own tests
and runs on the demo. Kinds: ``scalar`` (one score per prompt and image), ``similarity`` (image
embeddings compared with the user's references), ``judge`` (a vision-language model answers A or
B given the references) and ``reasoning`` (a judge that writes user-specific dimensions first).

The templates live in ``pigbench/templates/evaluator_plugin/``.

examples:
  pigbench new-evaluator my-reward
  pigbench new-evaluator my-judge --kind judge --out plugins/pigbench-my-judge
"""

from __future__ import annotations

import argparse
import re
import string
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import pigbench
from pigbench.registry import Registry, RegistryError, evaluators

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
    def of(cls, name: str, plugin: str = "evaluator") -> "PluginNames":
        """The names of the ``plugin`` ("evaluator" or "dataset") called ``name``."""
        if not NAME_PATTERN.fullmatch(name):
            example = "my-reward" if plugin == "evaluator" else "my-dataset"
            raise ScaffoldError(f"{plugin} name {name!r} must be lower-case letters, digits and single hyphens, "
                                f"starting with a letter (e.g. {example})")
        parts = name.split("-")
        return cls(name, f"pigbench-{name}", "pigbench_" + "_".join(parts), "".join(p.capitalize() for p in parts),
                   "_".join(parts).upper() + "_MODEL")


def plugin_files(names: PluginNames, kind: str) -> dict[str, str]:
    """The package's files: relative path -> text."""
    if kind not in KINDS:
        raise ScaffoldError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    return render_templates("evaluator_plugin", {**vars(names), "kind": kind}, {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{names.package}/__init__.py": "package_init.py.tmpl",
        f"{names.package}/evaluator.py": f"{kind}.py.tmpl",
        f"tests/test_{names.package}.py": "test_conformance.py.tmpl",
    })


def render_templates(folder: str, values: dict[str, str], files: dict[str, str]) -> dict[str, str]:
    """``files`` (relative path -> template in ``pigbench/templates/<folder>/``) rendered with
    ``values`` and ``pigbench_version``: relative path -> text."""
    templates = resources.files("pigbench").joinpath("templates", folder)
    values = {**values, "pigbench_version": pigbench.__version__}
    return {rel: string.Template(templates.joinpath(t).read_text("utf-8")).substitute(values) for rel, t in files.items()}


def write_plugin(name: str, kind: str = "scalar", out: Optional[Path] = None) -> tuple[Path, list[Path]]:
    """Write the package into ``out`` (default ``./pigbench-NAME``), which must not exist or be
    empty. Refuses a name that an installed or built-in evaluator already has."""
    names = PluginNames.of(name)
    require_free(evaluators, name)
    return write_package(out if out is not None else Path(names.dist), plugin_files(names, kind))


def require_free(registry: Registry, name: str) -> None:
    """Refuse ``name`` when an installed or built-in plug-in of ``registry`` has it."""
    if name in registry.names():
        raise ScaffoldError(f"{registry.kind} name {name!r} is taken ({registry.source(name)}); choose another")


def write_package(root: Path, files: dict[str, Union[str, bytes]]) -> tuple[Path, list[Path]]:
    """Write ``files`` (relative path -> text or bytes) under ``root``, which must not exist or be
    empty; the root and the paths written."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root} already exists and is not an empty directory")
    written = []
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        written.append(path)
    return root, written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="evaluator name, e.g. my-reward (lower case, digits, hyphens)")
    p.add_argument("--kind", choices=KINDS, default="scalar", help="template to start from (default scalar)")
    p.add_argument("--out", "--output", type=Path, help="directory to create (default ./pigbench-NAME)")


def main(args: argparse.Namespace) -> int:
    try:
        root, written = write_plugin(args.name, args.kind, args.out)
    except (ScaffoldError, RegistryError) as exc:  # RegistryError: installed plug-ins clash, so no name is known free
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = PluginNames.of(args.name)
    print_written(root, written, f"{args.kind} evaluator {args.name!r}", [
        (f"pip install -e {root}", f"registers {args.name!r} through its entry point"),
        (f"pigbench check-evaluator {args.name}", "passes as generated, with the placeholder model"),
        (f"edit {root / names.package / 'evaluator.py'}", "fill in every TODO, then check again"),
        (f"pytest {root}", "the conformance checks as a test"),
        (f"pigbench run --evaluator {args.name} --dataset demo", "a first results file"),
    ])
    return 0


def print_written(root: Path, written: list[Path], what: str, steps: list[tuple[str, str]]) -> None:
    """What was written for ``what``, then the next ``steps`` (command, why) to take."""
    print(f"wrote {root}/ ({what}):")
    for path in written:
        print(f"  {path.relative_to(root)}")
    width = max(len(cmd) for cmd, _ in steps)
    print("\nnext:")
    for cmd, why in steps:
        print(f"  {cmd.ljust(width)}  # {why}")
    print("CONTRIBUTING.md in pigbench says how to submit results.")


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("new-evaluator"))
