"""The ``pigbench`` command: its help lists every subcommand with its summary, importing none of them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from pigbench.cli import COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_summary_is_the_module_docstring_first_line(name):
    module, summary = COMMANDS[name]
    assert importlib.import_module(module).__doc__.strip().splitlines()[0] == summary


def test_help_lists_summaries_without_importing_subcommands():
    script = ("import contextlib, sys\nfrom pigbench.cli import COMMANDS, main\n"
              "with contextlib.suppress(SystemExit):\n    main(['--help'])\n"
              "print('IMPORTED', sorted(m for m, _ in COMMANDS.values() if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip().endswith("IMPORTED []")
    assert "Build the static leaderboard site from a results directory." in out



def test_a_reader_closing_stdout_early_ends_the_command_quietly():
    """`pigbench report | head`: status 141 as for SIGPIPE, no BrokenPipeError traceback."""
    command = "from pigbench.cli import quiet_on_closed_stdout; sys.exit(quiet_on_closed_stdout(lambda: [print('x' * 999) for _ in range(999)] and 0))"
    child = subprocess.Popen([sys.executable, "-c", f"import sys; {command}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    child.stdout.read(10)
    child.stdout.close()  # 1 MB is more than a pipe holds: the child's writes fail
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141, err
    assert err == ""


def test_ctrl_c_in_any_command_exits_130_in_one_line(monkeypatch, capsys):
    """Ctrl-C in export-episodes, score, report, a build stage, ... used to end in a KeyboardInterrupt traceback."""
    from pigbench import validate
    from pigbench.cli import main

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(validate, "main", interrupted)
    assert main(["validate", "some.json"]) == 130
    assert capsys.readouterr().err == "pigbench validate: interrupted\n"
