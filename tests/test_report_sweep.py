"""``pigbench sweep``: one run per reference size on the toy plug-ins, failures reported per size."""

import argparse

import pytest

from pigbench.cli import Terminated, main as cli_main
from pigbench.runner import RunConfig
from pigbench.sweep import format_summary, parse_sizes, sweep


def base(tmp_path, **kw):
    return RunConfig(evaluator="toy-brightness", dataset="toy", output=str(tmp_path / "results"),
                     cache_dir=str(tmp_path / "cache"), progress=False, n_bootstrap=50, **kw)


def test_parse_sizes_sorts_and_deduplicates():
    assert parse_sizes("8, 1,2,4,2") == [1, 2, 4, 8]
    for bad in ("", "1,,2", "1;2", "-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_sizes(bad)


def test_sweep_runs_each_size_and_reports_a_size_that_fails(tmp_path):
    logged = []
    outcomes = sweep(base(tmp_path), [1, 3, 50], log=logged.append)
    assert list(outcomes) == [1, 3, 50]
    for k in (1, 3):
        assert outcomes[k].results["split"]["reference_size"] == k
        assert outcomes[k].results_path.name == f"toy-brightness__k{k}.json"
    assert isinstance(outcomes[50], str) and "no targets" in outcomes[50]  # no toy user has 50 records
    summary = format_summary(outcomes)
    assert "failed" in summary.splitlines()[-1] and f"{outcomes[1].results['metrics']['acc_w_tie']['micro']:.1f}" in summary


def test_sweep_keeps_sizes_apart_under_an_explicit_variant(tmp_path):
    outcomes = sweep(base(tmp_path, variant="abl"), [1, 2], log=lambda m: None)
    assert [o.results_path.name for o in outcomes.values()] == ["toy-brightness__abl_k1.json", "toy-brightness__abl_k2.json"]
    outcomes = sweep(base(tmp_path, variant=""), [1], log=lambda m: None)  # --variant "": no suffix but the size
    assert outcomes[1].results_path.name == "toy-brightness__k1.json" and outcomes[1].results["evaluator"]["variant"] == "k1"


def test_sweep_cli(tmp_path, capsys):
    args = ["sweep", "--evaluator", "toy-brightness", "--dataset", "toy", "--reference-sizes", "1,2",
            "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "toy-brightness__k1.json" in out and "toy-brightness__k2.json" in out
    assert cli_main(args + ["--reference-size", "3"]) == 2
    assert "--reference-sizes" in capsys.readouterr().err


def test_sweep_help_hides_reference_size_which_it_still_refuses_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["sweep", "--help"])
    shown = capsys.readouterr().out
    assert "--reference-sizes K1,K2,..." in shown and "REFERENCE_SIZE" not in shown
    args = ["sweep", "--evaluator", "toy-brightness", "--dataset", "toy", "--reference-sizes", "1",
            "--output", str(tmp_path / "results"), "--no-progress", "--reference-size", "3"]
    assert cli_main(args) == 2  # not prefix-matched to --reference-sizes by argparse
    assert capsys.readouterr().err == "error: use --reference-sizes with sweep (not --reference-size)\n"
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("interrupt, status", [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_sweep_cli_ctrl_c_or_sigterm_exits_in_one_line_as_run_does(tmp_path, monkeypatch, capsys, interrupt, status):
    """Ctrl-C used to end the sweep in a KeyboardInterrupt traceback; SIGTERM exits 143 (128 + 15)."""
    def interrupted(*args, **kwargs):
        raise interrupt

    monkeypatch.setattr("pigbench.sweep.sweep", interrupted)
    assert cli_main(["sweep", "--evaluator", "toy-brightness", "--dataset", "toy", "--reference-sizes", "1",
                     "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]) == status
    assert capsys.readouterr().err == ("interrupted: the predictions committed so far are kept; run the same command "
                                       "again to resume\n")


@pytest.mark.parametrize("mistake, says", [(["--option", "no_such_option=1"], "no_such_option"),
                                           (["--output", "FILE"], "--output")])
def test_a_setting_no_size_can_run_with_is_one_usage_error(tmp_path, capsys, mistake, says):
    """An unknown option or an --output that is a file was reported once per size, with exit 1."""
    (tmp_path / "FILE").write_text("")
    mistake = [str(tmp_path / m) if m == "FILE" else m for m in mistake]
    args = ["sweep", "--evaluator", "toy-brightness", "--dataset", "toy", "--reference-sizes", "1,2,3",
            "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress", *mistake]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("error:") == 1 and "reference size" not in err


def test_a_size_that_fails_midway_leaves_the_later_sizes_running(tmp_path):
    """A size stopped by the error budget (RunAborted) is reported, and the sizes after it still run."""
    from pigbench.runner import RunAborted, run

    def runner(config):
        if config.reference_size == 2:
            raise RunAborted("9 of 10 samples failed")
        return run(config, log=lambda m: None)

    outcomes = sweep(base(tmp_path), [1, 2, 3], runner=runner, log=lambda m: None)
    assert list(outcomes) == [1, 2, 3] and outcomes[2] == "RunAborted: 9 of 10 samples failed"
    assert [outcomes[k].results["split"]["reference_size"] for k in (1, 3)] == [1, 3]


def test_the_summary_shows_each_sizes_own_accuracies_in_their_columns():
    from pathlib import Path

    from pigbench.runner import RunOutcome

    def outcome(w_tie, wo_tie, name):
        metrics = {"acc_w_tie": {"micro": w_tie, "micro_ci95": [w_tie - 5, w_tie + 5]},
                   "acc_wo_tie": {"micro": wo_tie, "micro_ci95": None}}
        return RunOutcome({"metrics": metrics}, Path(name), 0, 10)

    summary = format_summary({1: outcome(40.0, 61.0, "k1.json"), 2: "ValueError: no targets\nmore",
                              4: outcome(55.5, None, "k4.json")})
    assert summary.splitlines() == [
        f"{'K':>4}  {'acc w/ tie':<22}{'acc w/o tie':<22}results",
        f"{1:>4}  {'40.0 [35.0, 45.0]':<22}{'61.0':<22}k1.json",
        f"{2:>4}  failed: ValueError: no targets",
        f"{4:>4}  {'55.5 [50.5, 60.5]':<22}{'n/a':<22}k4.json",
    ]


def test_sweep_cli_exits_1_when_a_size_failed(tmp_path, capsys):
    args = ["sweep", "--evaluator", "toy-brightness", "--dataset", "toy", "--reference-sizes", "1,50",
            "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert cli_main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].endswith("toy-brightness__k1.json") and out[2].startswith("  50  failed: ")
