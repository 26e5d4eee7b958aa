"""Write a ready-to-fill dataset adapter plug-in package: ``pigbench new-adapter NAME [--out DIR]``.

The package (``pigbench-NAME/`` by default) holds a ``pyproject.toml`` declaring the
``pigbench.adapters`` entry point, the adapter module (``pigbench_NAME/adapter.py``) reading
per-user rankings from a JSON-lines file with a ``TODO`` wherever the author must fill something
in, a small sample dataset it reads when no ``--dataset-path`` is given (``pigbench_NAME/sample/``),
a test that runs the conformance checks, and a README. As generated it installs, passes
``pigbench check-dataset NAME`` and its own tests, and runs with any evaluator.

The templates live in ``pigbench/templates/adapter_plugin/``; :mod:`pigbench.scaffold` writes them.

examples:
  pigbench new-adapter my-dataset
  pigbench new-adapter my-dataset --out plugins/pigbench-my-dataset
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Optional, Union

from PIL import Image, ImageDraw

from pigbench.registry import RegistryError, adapters
from pigbench.scaffold import PluginNames, ScaffoldError, print_written, render_templates, require_free, write_package

SAMPLE_USERS = 6
SAMPLE_RANKINGS = 5  # per user: 2 references at the default K, 3 target rankings
SAMPLE_IMAGES = 3  # per ranking
SAMPLE_SUBJECTS = ("a lighthouse", "a red bicycle", "a bowl of fruit", "a mountain cabin", "a sailboat", "a city street")
SAMPLE_STYLES = ("at dawn", "in watercolour", "as a pencil sketch", "in neon light", "on a rainy day")


def plugin_files(names: PluginNames) -> dict[str, Union[str, bytes]]:
    """The package's files: relative path -> text (or bytes, for the sample's images)."""
    files: dict[str, Union[str, bytes]] = dict(render_templates("adapter_plugin", vars(names), {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{names.package}/__init__.py": "package_init.py.tmpl",
        f"{names.package}/adapter.py": "adapter.py.tmpl",
        f"tests/test_{names.package}.py": "test_conformance.py.tmpl",
    }))
    files.update({f"{names.package}/sample/{rel}": content for rel, content in sample_files().items()})
    return files


def sample_files() -> dict[str, Union[str, bytes]]:
    """A small dataset in the template's format: ``rankings.jsonl`` and distinct PNG images.

    Each of the users ranks 3 images of 5 prompts of their own; every user prefers the brighter
    image but one ranking in five, and every fourth ranking has a tie, so golds A, B and TIE occur."""
    files: dict[str, Union[str, bytes]] = {}
    lines = []
    for u in range(SAMPLE_USERS):
        for r in range(SAMPLE_RANKINGS):
            n = u * SAMPLE_RANKINGS + r
            names = [f"images/u{u}-r{r}-{i}.png" for i in range(SAMPLE_IMAGES)]
            levels = [40 + 70 * i + 3 * n for i in range(SAMPLE_IMAGES)]  # distinct in every image
            for rel, level in zip(names, levels):
                files[rel] = _image(level, n)
            ranks = [SAMPLE_IMAGES - i for i in range(SAMPLE_IMAGES)]  # the brightest first
            if n % 5 == 4:
                ranks.reverse()
            if n % 4 == 3:
                ranks[0] = ranks[1]
            prompt = f"{SAMPLE_SUBJECTS[u]} {SAMPLE_STYLES[r]}"
            lines.append(json.dumps({"user_id": f"user{u}", "prompt": prompt, "images": names, "ranks": ranks}))
    files["rankings.jsonl"] = "\n".join(lines) + "\n"
    return files


def _image(level: int, n: int) -> bytes:
    """A 16x16 grey PNG of ``level`` with a mark at column ``n % 16`` (so no two images are equal)."""
    img = Image.new("RGB", (16, 16), (level, level, level))
    ImageDraw.Draw(img).line([(n % 16, 0), (n % 16, 15)], fill=(255 - level, 0, n * 7 % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_plugin(name: str, out: Optional[Path] = None) -> tuple[Path, list[Path]]:
    """Write the package into ``out`` (default ``./pigbench-NAME``), which must not exist or be
    empty. Refuses a name that an installed or built-in dataset already has."""
    names = PluginNames.of(name, plugin="dataset")
    require_free(adapters, name)
    return write_package(out if out is not None else Path(names.dist), plugin_files(names))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="dataset name, e.g. my-dataset (lower case, digits, hyphens)")
    p.add_argument("--out", "--output", type=Path, help="directory to create (default ./pigbench-NAME)")


def main(args: argparse.Namespace) -> int:
    try:
        root, written = write_plugin(args.name, args.out)
    except (ScaffoldError, RegistryError) as exc:  # RegistryError: installed plug-ins clash, so no name is known free
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = PluginNames.of(args.name, plugin="dataset")
    shown = [p for p in written if "sample" not in p.relative_to(root).parts] + [root / names.package / "sample"]
    print_written(root, shown, f"dataset adapter {args.name!r}", [
        (f"pip install -e {root}", f"registers {args.name!r} through its entry point"),
        (f"pigbench check-dataset {args.name}", "passes as generated, on the sample"),
        (f"edit {root / names.package / 'adapter.py'}", "fill in every TODO, then check again with --dataset-path"),
        (f"pytest {root}", "the conformance checks as a test"),
        (f"pigbench run --evaluator color-reference --dataset {args.name}", "a first results file"),
    ])
    return 0


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("new-adapter"))
