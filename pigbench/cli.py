"""``pigbench`` command line: one small module per subcommand, imported only when used.

Each module in :data:`COMMANDS` defines ``add_arguments(parser)`` and ``main(args) -> int``, and
its docstring's first line is the subcommand's help. ``python -m pigbench.run`` and
``pigbench run`` are the same command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

COMMANDS: dict[str, str] = {
    "run": "pigbench.run",
    "list": "pigbench.list",
    "validate": "pigbench.validate",
    "data": "pigbench.data_info",
    "report": "pigbench.report.cli",
    "sweep": "pigbench.sweep",
    "leaderboard": "pigbench.leaderboard",
    "build": "pigbench.build.cli",
    "new-evaluator": "pigbench.scaffold",
    "check-evaluator": "pigbench.check_evaluator",
    "export-episodes": "pigbench.export_episodes",
    "score": "pigbench.score",
}

EPILOG = """examples:
  pigbench run                                   # the embedded demo with the default evaluator
  pigbench run --evaluator ssim-reference --dataset demo --limit 200
  pigbench list
  pigbench validate results/demo/color-reference.json
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pigbench", description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported; the others are listed by name.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, module in COMMANDS.items():
        if name == chosen:
            mod = importlib.import_module(module)
            p = sub.add_parser(name, help=_first_line(mod.__doc__), description=mod.__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
            mod.add_arguments(p)
            p.set_defaults(_main=mod.main)
        else:
            sub.add_parser(name, help=f"(see pigbench {name} --help)", add_help=False)
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args._main(args) or 0)


def _first_line(doc: Optional[str]) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


if __name__ == "__main__":
    sys.exit(main())
