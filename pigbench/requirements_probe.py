"""Simulate a machine without the model packages: the probe behind the ``requirements`` check.

In a fresh interpreter, :func:`probe_hidden_packages` makes the model packages unimportable
(``import torch`` raises ModuleNotFoundError, ``importlib.util.find_spec("torch")`` is None), then
imports the evaluator, calls ``check_requirements`` and, if that passes, sets the evaluator up and
predicts two demo episodes. Hidden are the import names of pigbench's optional extras (but the
test tooling) and of the plug-in distribution's own requirements, minus pigbench's core
dependencies. A plug-in conforms when it raises :class:`RequirementError`, or really runs without
them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any, Callable, Optional

from pigbench.evaluator import Evaluator, RequirementError, Runtime
from pigbench.protocol import Episode
from pigbench.registry import adapters, evaluators

PROBE_TIMEOUT_S = 180
TOOLING_EXTRAS = ("dev",)  # extras never hidden


def probe_in_subprocess(cls: type[Evaluator], options: dict[str, str], run_model: bool) -> dict[str, Any]:
    """Run :func:`probe_hidden_packages` in a fresh interpreter that can import what this one can.

    The answer's ``outcome`` is one of those of :func:`probe_hidden_packages`, or
    ``unimportable``, ``timeout``, ``crashed`` (with an ``error``)."""
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return {"outcome": "unimportable", "error": f"{cls.__qualname__} cannot be imported by a fresh process"}
    code = ("import json, sys; from pigbench.requirements_probe import probe_hidden_packages as probe; "
            "print(json.dumps(probe(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == '1')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = [sys.executable, "-c", code, cls.__module__, cls.__qualname__, json.dumps(options), "1" if run_model else "0"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "error": f"no answer within {PROBE_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"outcome": "crashed", "error": f"the probe process failed: {tail[0]}"}


def probe_hidden_packages(module: str, qualname: str, options: dict[str, str], run_model: bool) -> dict[str, Any]:
    """Hide the model packages in this process, then try the evaluator ``module:qualname``.

    Returns ``hidden`` (the names hidden), ``seconds`` (check_requirements' time) and ``outcome``:
    ``requirement-error`` (fails fast: good), ``runs-without`` (needs none of them: good),
    ``met-not-run`` (requirements pass; not run because ``run_model`` is false),
    ``import-failed`` (the module itself needs them), ``import-error-later`` (check_requirements
    passes, then setup or predict needs them) or ``other-error``.
    """
    hidden = _hide(model_packages(module))
    base: dict[str, Any] = {"hidden": hidden}
    try:
        cls = _import(module, qualname)
    except ImportError as exc:
        return {**base, "outcome": "import-failed", "error": error_text(exc)}
    config = cls.Config.from_options(options)
    outcome, seconds = timed(cls.check_requirements, config)
    base["seconds"] = seconds
    if isinstance(outcome, RequirementError):
        return {**base, "outcome": "requirement-error", "message": str(outcome)}
    if outcome is not None:
        return {**base, "outcome": "other-error", "error": f"check_requirements raised {error_text(outcome)}"}
    if not run_model:
        return {**base, "outcome": "met-not-run"}
    try:
        with tempfile.TemporaryDirectory(prefix="pigbench-probe-") as cache_dir:
            evaluator = cls(config, Runtime(cache_dir=cache_dir))
            evaluator.name = cls.name or cls.__name__
            evaluator.setup()
            preds = evaluator.predict([e.without_gold() for e in _two_demo_episodes()])
    except ImportError as exc:
        return {**base, "outcome": "import-error-later", "error": error_text(exc)}
    except Exception as exc:
        return {**base, "outcome": "other-error", "error": f"setup/predict raised {error_text(exc)}"}
    import_errors = [p.error for p in preds if p.error and re.search(r"ImportError|ModuleNotFoundError|No module named", p.error)]
    if import_errors:
        return {**base, "outcome": "import-error-later", "error": import_errors[0]}
    return {**base, "outcome": "runs-without"}


def timed(fn: Callable[[Any], Any], arg: Any) -> tuple[Optional[Exception], float]:
    """(the exception ``fn(arg)`` raised or None, seconds it took)."""
    start = time.perf_counter()
    try:
        fn(arg)
        outcome = None
    except Exception as exc:
        outcome = exc
    return outcome, time.perf_counter() - start


def error_text(exc: BaseException, n: int = 120) -> str:
    """``Type: message`` on one line, at most about ``n`` characters of message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text if len(text) <= n else text[: n - 3] + '...'}"


def model_packages(module: str) -> list[str]:
    """The import names to hide for the plug-in ``module`` (see the module docstring)."""
    wanted = _requirement_names("pigbench", extras=True)
    top = module.partition(".")[0]
    for ep in metadata.entry_points(group=evaluators.group):  # the plug-in's own distribution
        if ep.value.partition(".")[0].partition(":")[0] == top and ep.dist is not None:
            wanted |= _requirement_names(ep.dist.name, extras=False)
    core = _requirement_names("pigbench", extras=False) | {"pigbench"}
    keep = {name for dist in core for name in _import_names(dist)}
    names = {name for dist in wanted - core for name in _import_names(dist)} - keep
    return sorted(n for n in names if n.isidentifier() and not n.startswith("_"))


def _two_demo_episodes() -> list[Episode]:
    split = adapters.get("demo")(None, {"users": "2"}).split(seed=0, reference_size=None, max_targets_per_user=1)
    return split.episodes[:2]


def _import(module: str, qualname: str) -> type[Evaluator]:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _requirement_names(dist: str, extras: bool) -> set[str]:
    """Normalized names of the distributions ``dist`` requires: those of its extras but the
    test tooling (``extras=True``), or its core dependencies (``extras=False``)."""
    out = set()
    for req in metadata.requires(dist) or []:
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if (extra is not None and extra.group(1) not in TOOLING_EXTRAS) if extras else extra is None:
            out.add(_normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req).group(0)))
    return out


def _import_names(dist: str) -> set[str]:
    """Top-level import names an installed distribution provides (empty if not installed)."""
    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return set()
    listed = found.read_text("top_level.txt")
    if listed:
        return {line.strip() for line in listed.splitlines() if line.strip()}
    names = set()
    for first in set(re.findall(r"^([^/,\r\n]+)[/,]", found.read_text("RECORD") or "", re.MULTILINE)):
        if not first.endswith((".dist-info", ".egg-info", ".data", ".pth")) and first not in ("..", "__pycache__"):
            names.add(first[: -len(".py")] if first.endswith(".py") else first)
    return names


def _hide(names: list[str]) -> list[str]:
    """Make ``import name`` fail and ``importlib.util.find_spec(name)`` return None."""
    hidden = []
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
            hidden.append(name)
    return hidden


def _normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()
