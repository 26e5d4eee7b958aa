"""The pass/fail table shared by check-evaluator and check-dataset (pigbench.check_table)."""

from pigbench.check_table import CheckReport, CheckResult, more, short


def test_the_table_aligns_columns_and_counts_every_status():
    report = CheckReport("my-plugin", [CheckResult("config", "pass", "round-trips"),
                                       CheckResult("reference-free", "fail", "read references"),
                                       CheckResult("swap", "skip", "a scalar scorer"),
                                       CheckResult("images", "not run", "no split")])
    assert not report.ok and report.status("swap") == "skip" and report.detail("images") == "no split"
    assert report.table() == (
        "CHECK           RESULT   DETAIL\n"
        "config          PASS     round-trips\n"
        "reference-free  FAIL     read references\n"
        "swap            SKIP     a scalar scorer\n"
        "images          NOT RUN  no split\n"
        "\n"
        "my-plugin: DOES NOT CONFORM (1 pass, 1 fail, 1 not run, 1 skip)")
    assert CheckReport("ok", report.checks[:1] + report.checks[2:3]).table().endswith("ok: conforms (1 pass, 1 skip)")


def test_short_puts_text_on_one_line_cut_to_n_characters():
    assert short("a\n  b\tc") == "a b c" and short(None) == ""
    assert short("x" * 10, 10) == "x" * 10
    assert short("x" * 11, 10) == "x" * 7 + "..."


def test_more_counts_the_items_not_shown():
    assert more([1, 2, 3], 3) == "" and more([1, 2, 3, 4], 3) == " (and 1 more)"
