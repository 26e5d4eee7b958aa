"""`pigbench data info`: the split summary a run would use, on the PIGBench-format fixture."""

import json

from pigbench.adapters.pigbench_format import PIGBenchFormat
from pigbench.cli import main
from test_adapter_pigbench import build


def test_data_info_reports_users_ties_histogram_skips_and_fingerprint(tmp_path, capsys):
    root = build(tmp_path / "d")
    assert main(["data", "info", "pigbench", "--path", str(root), "--seed", "3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    adapter = PIGBenchFormat(str(root))
    adapter.name = "pigbench"
    split = adapter.split(seed=3, reference_size=None)
    assert info["fingerprint"] == split.fingerprint and info["users"] == 1 and info["targets"] == 6
    assert info["reference_size_histogram"] == {"5": 1} and info["reference_size"] == "dynamic"
    assert info["gold_ties"] == sum(e.target.gold.value == "TIE" for e in split.episodes)
    assert info["skipped_users"] == {"fewer than 2 ranked sets": 1, "no target left after leakage checks": 2}
    assert main(["data", "info", "pigbench", "--path", str(root), "--reference-size", "2"]) == 0
    text = capsys.readouterr().out
    assert "reference-size histogram (size: users): 2: 1" in text and "skipped users:" in text


def test_data_info_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["data", "info", "pigbench", "--path", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "info", "pigbenhc"]) == 2
    assert "did you mean 'pigbench'" in capsys.readouterr().err


def test_data_info_text_counts_records_once_and_lists_each_skip_kind_with_examples(tmp_path, capsys):
    """Target records (not pairs), reference records, the tie share of targets, and both skip lists."""
    root = build(tmp_path / "d")
    assert main(["data", "info", "pigbench", "--path", str(root), "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "users 1  targets 6  gold ties 1 (16.7%)",
        "records: 1 target, 5 reference",
        "reference-size histogram (size: users): 5: 1",
        "skipped users:",
        "         2  no target left after leakage checks  (e.g. user u2, user u4)",
        "         1  fewer than 2 ranked sets  (e.g. user u3)",
        "skipped records / target pairs:",
        "         1  target prompt appears in the user's references  (e.g. p8)",
        "         1  target image appears in the user's references  (e.g. p7)",
    ]
