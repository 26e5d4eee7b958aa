"""``pigbench`` command line: one small module per subcommand, imported only when used.

Each module in :data:`COMMANDS` defines ``add_arguments(parser)`` and ``main(args) -> int``; its
docstring's first line is the subcommand's help, copied into :data:`COMMANDS` so that ``pigbench
--help`` imports none of them (a test keeps the copies equal). ``python -m`` on a subcommand's
module is the same command: ``python -m pigbench.run`` is ``pigbench run``, ``python -m
pigbench.validate`` is ``pigbench validate`` (:func:`run_as_module`), and ``python -m pigbench X``
is ``pigbench X`` (``pigbench/__main__.py``). The conventions every
subcommand follows (common flags, exit status, error messages) are in README.md, "Command-line
conventions"; ``tests/test_cli.py`` checks them on every subcommand's parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

COMMANDS: dict[str, tuple[str, str]] = {  # name: (module, its docstring's first line)
    "run": ("pigbench.run", "Run an evaluator on a dataset: split, predict (resumably), score, write the results file."),
    "list": ("pigbench.list", "List evaluators and datasets: kind, use of references, what each needs. Imports no model library."),
    "validate": ("pigbench.validate",
                 "Validate results files: schema, predictions hash, and every metric recomputed from the predictions."),
    "data": ("pigbench.data_info", "Inspect a dataset's per-user split: users, targets, ties, reference sizes, skips, fingerprint."),
    "report": ("pigbench.report.cli", "Render paper tables, figures and the dimension analysis from a results directory."),
    "sweep": ("pigbench.sweep",
              "Run one evaluator at several reference sizes (one results file per size) for the accuracy-vs-K plot."),
    "leaderboard": ("pigbench.leaderboard", "Build the static leaderboard site from a results directory."),
    "build": ("pigbench.build.cli", "Build the PIGBench dataset: prompts, expand, render, review, annotate, export (each resumable)."),
    "new-evaluator": ("pigbench.scaffold",
                      "Write a ready-to-fill evaluator plug-in package: ``pigbench new-evaluator NAME [--kind K]``."),
    "check-evaluator": ("pigbench.check_evaluator",
                        "Run the conformance checks on an evaluator and print a pass/fail table (exit 1 on any failure)."),
    "new-adapter": ("pigbench.scaffold_adapter",
                    "Write a ready-to-fill dataset adapter plug-in package: ``pigbench new-adapter NAME [--out DIR]``."),
    "check-dataset": ("pigbench.check_dataset",
                      "Run the conformance checks on a dataset adapter and print a pass/fail table (exit 1 on any failure)."),
    "export-episodes": ("pigbench.export_episodes",
                        "Export a split's episodes (without gold labels) for a model that runs outside pigbench."),
    "score": ("pigbench.score", "Score saved predictions of a model that ran outside pigbench into a validated results file."),
}

EPILOG = """examples:
  pigbench run                                   # the embedded demo with the default evaluator
  pigbench run --evaluator ssim-reference --dataset demo --limit 200
  pigbench list
  pigbench validate results/demo/color-reference.json
  pigbench check-dataset my-data --dataset-path ./data   # conformance checks of a dataset adapter
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pigbench", description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:
        with sigterm_as_interrupt():  # from the start: the chosen module's imports (torch) take a while
            # Only the chosen subcommand's module is imported; the others are listed by name.
            for name, (_, summary) in COMMANDS.items():
                if name == chosen:
                    add_subcommand(sub, name)
                else:
                    sub.add_parser(name, help=summary, add_help=False)
            args = parser.parse_args(argv)
            if not getattr(args, "_main", None):
                parser.print_help()
                return 0 if args.command is None else 2
            return quiet_on_closed_stdout(lambda: int(args._main(args) or 0))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM where the command has no message of its own (run and sweep have)
        print(f"pigbench {chosen or ''}".rstrip() + ": interrupted", file=sys.stderr)
        return interrupted_status(exc)


def add_subcommand(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Import subcommand ``name``'s module and add its parser to ``sub``: described by the module's
    docstring, with the module's arguments, and ``_main`` set to its ``main``."""
    module, summary = COMMANDS[name]
    mod = importlib.import_module(module)
    p = sub.add_parser(name, help=summary, description=mod.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(p)
    p.set_defaults(_main=mod.main)
    return p


def run_as_module(name: str, argv: Optional[Sequence[str]] = None) -> int:
    """``python -m MODULE ARGS`` for the module of subcommand ``name`` (``python -m pigbench.validate
    FILE``): runs ``pigbench name ARGS`` (``argv``, default the command line's), the same command with
    the same exit status."""
    return main([name, *(sys.argv[1:] if argv is None else argv)])


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, ``timeout``, ``kill``) in a command: handled as Ctrl-C is."""


def interrupted_status(exc: KeyboardInterrupt) -> int:
    """The exit status of an interrupted command: 143 (128 + SIGTERM) for SIGTERM, 130 for Ctrl-C."""
    return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in this process's main thread, so the
    command stops as on Ctrl-C (its finally blocks run, it prints its message); the previous
    handler comes back on leaving. A process forked meanwhile (a decode worker, a hashing process)
    inherits the handler: there it restores the default action and re-raises, so the child dies by
    SIGTERM as before. Installs nothing outside the main thread (only it may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installer = os.getpid()

    def on_sigterm(signum: int, frame: object) -> None:
        if os.getpid() != installer:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def quiet_on_closed_stdout(command: Callable[[], int]) -> int:
    """``command()``; when its reader closes stdout early (``pigbench report | head``), the
    command stops as command-line tools do, with status 141 (128 + SIGPIPE) and no traceback."""
    try:
        return command()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
