"""The ``pigbench`` command: its help lists every subcommand with its summary, importing none of them."""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import time

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


def test_sigterm_in_any_command_exits_143_in_one_line_and_restores_the_handler(monkeypatch, capsys):
    """SIGTERM (a scheduler's time limit) is Ctrl-C's message with status 128 + 15; outside the command
    (pigbench used as a library) the process's own handler is back."""
    from pigbench import validate
    from pigbench.cli import main

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts the sleep
        return 0

    def ignored(signum, frame):  # this test process's own handler: SIGTERM must not end pytest
        pass

    monkeypatch.setattr(validate, "main", terminated)
    previous = signal.signal(signal.SIGTERM, ignored)
    try:
        assert main(["validate", "some.json"]) == 143
        assert signal.getsignal(signal.SIGTERM) is ignored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err == "pigbench validate: interrupted\n"


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)


def test_a_process_forked_under_the_sigterm_handler_dies_by_sigterm_without_raising():
    """Decode workers and hashing processes forked by a command inherit its handler: SIGTERM must
    kill them as before (exit -15), not raise in them (that would be exit 1 and a traceback)."""
    from pigbench.cli import sigterm_as_interrupt

    with sigterm_as_interrupt():
        child = multiprocessing.get_context("fork").Process(target=_terminate_self)
        child.start()
        child.join(timeout=60)
    assert child.exitcode == -signal.SIGTERM


def test_a_tie_threshold_for_a_judge_answering_in_text_is_a_one_line_error(tmp_path, capsys):
    """It used to change only the results file name: tau has no scores to act on when the judge answers A/B/tie."""
    from pigbench.run import cli

    argv = ["--evaluator", "openai-judge", "--dataset", "toy", "--output", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--option", "base_url=http://127.0.0.1:9/v1", "--tie-threshold", "0.1"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tie-threshold (option tie_threshold) applies only to scalar scores" in err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))


def test_swap_for_an_evaluator_scoring_each_image_alone_is_a_one_line_error(tmp_path, capsys):
    """It used to score every image in both orders for identical numbers under another run key."""
    from pigbench.run import cli

    argv = ["--evaluator", "toy-brightness", "--dataset", "toy", "--output", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--swap"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--swap: toy-brightness scores each image alone" in err
    assert not (tmp_path / "results").exists()


# The conventions of README.md, "Command-line conventions", checked on every subcommand's parser.

def _subcommand_parser(name):
    """``pigbench NAME``'s parser, built as ``pigbench`` builds it."""
    from pigbench.cli import add_subcommand

    return add_subcommand(argparse.ArgumentParser(prog="pigbench").add_subparsers(), name)


def _parsers(parser):
    """``parser`` and every parser below it (``pigbench build export``, ``pigbench leaderboard build``, ...)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _parsers(child)


def _options(name):
    """(parser prog, option strings of one argument) for every optional argument of ``pigbench NAME``."""
    return [(p.prog, set(a.option_strings)) for p in _parsers(_subcommand_parser(name)) for a in p._actions
            if a.option_strings]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_output_option_accepts_out_and_output(name):
    """`pigbench report --output DIR` used to be refused, `pigbench run --out DIR` only an abbreviation."""
    for prog, strings in _options(name):
        if strings & {"--out", "--output"}:
            assert {"--out", "--output"} <= strings, f"{prog}: {sorted(strings)}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_dataset_and_split_options_accept_the_common_spellings(name):
    for prog, strings in _options(name):
        for other, common in (("--path", "--dataset-path"), ("--k", "--reference-size")):
            if other in strings:
                assert common in strings, f"{prog}: {sorted(strings)}"
    for parser in _parsers(_subcommand_parser(name)):
        strings = set(parser._option_string_actions)
        assert ("--dataset-path" in strings) == ("--dataset-option" in strings), parser.prog


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_help_has_examples_of_itself(name):
    help_text = _subcommand_parser(name).format_help()
    assert "\nexamples:\n" in help_text, f"pigbench {name} --help has no examples section"
    examples = help_text.split("\nexamples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert any(line.startswith(f"  pigbench {name} ") or line == f"  pigbench {name}" for line in examples), examples
    assert all(line.startswith("  pigbench ") for line in examples), examples


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_python_dash_m_on_a_subcommands_module_is_the_same_command(name, monkeypatch, capsys):
    """`python -m pigbench.validate FILE` used to do nothing and exit 0; only run and list had a __main__."""
    module = COMMANDS[name][0]
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    for prog, strings in _options(name):
        assert all(s in shown for s in strings) or prog != f"pigbench {name}", (prog, strings)


def test_python_dash_m_pigbench_is_the_pigbench_command(tmp_path):
    """`python -m pigbench validate DIR` said "No module named pigbench.__main__"."""
    done = subprocess.run([sys.executable, "-m", "pigbench", "validate", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "cannot read results JSON" in done.stdout and done.stderr == "", done.stderr
    shown = subprocess.run([sys.executable, "-m", "pigbench", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: pigbench ") and "validate" in shown.stdout


def test_python_dash_m_pigbench_list_into_a_closed_pipe_ends_quietly():
    """`python -m pigbench.list | head` ended in a BrokenPipeError traceback, status 1; `pigbench list` exits 141."""
    child = subprocess.Popen([sys.executable, "-m", "pigbench.list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child writes: its first write fails
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141, err
    assert err == ""


def test_a_run_stopped_by_the_error_budget_exits_3_with_a_one_line_error(monkeypatch, capsys, tmp_path):
    """It said 'run aborted: ...' without the `error: ` every other stopped command starts with."""
    from pigbench import runner
    from pigbench.cli import main

    def aborted(config):
        raise runner.RunAborted("9 of 10 samples failed (more than --max-error-rate 0.5)")

    monkeypatch.setattr(runner, "run", aborted)
    assert main(["run", "--out", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]) == 3
    err = capsys.readouterr().err
    assert err == "error: run aborted: 9 of 10 samples failed (more than --max-error-rate 0.5)\n"


@pytest.mark.parametrize("argv", [
    ["run", "--dataset", "no-such-dataset"],
    ["sweep", "--dataset", "no-such-dataset", "--reference-sizes", "1,2"],
    ["data", "info", "no-such-dataset"],
    ["check-dataset", "no-such-dataset"],
    ["check-evaluator", "random", "--dataset", "no-such-dataset"],
    ["export-episodes", "--dataset", "no-such-dataset", "--out", "episodes"],
    ["score", "--dataset", "no-such-dataset", "--predictions", "{tmp}/predictions.jsonl", "--name", "mine"],
], ids=lambda argv: " ".join(argv[:2]))
def test_an_unknown_dataset_is_a_one_line_error_with_status_2_in_every_command(argv, tmp_path, monkeypatch, capsys):
    from pigbench.cli import main

    (tmp_path / "predictions.jsonl").write_text('{"fingerprint": "0123456789abcdef"}\n')
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # where results/, .pigbench_cache/ and episodes/ would be written
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no-such-dataset" in err, err
    assert list(work.iterdir()) == []  # nothing written
