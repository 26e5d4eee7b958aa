"""The terminal table printed after a run: each number in its column."""

from pigbench.metrics import Judged, compute_metrics
from pigbench.protocol import Label
from pigbench.report_table import format_metrics_table

A, B, T, I = Label.A, Label.B, Label.TIE, Label.INVALID


def test_each_accuracy_prints_micro_and_macro_with_their_own_cis():
    # u1: (A,A) 1, (B,A) 0, (TIE,TIE) 1, (INVALID,B) 0.5; u2: (TIE,A) 0.5, (B,B) 1 (as in test_metrics)
    samples = [Judged("u1", A, A), Judged("u1", A, B), Judged("u1", T, T), Judged("u1", B, I),
               Judged("u2", A, T), Judged("u2", B, B)]
    metrics = compute_metrics(samples, n_bootstrap=200, seed=1)
    metrics["acc_w_tie"]["micro_ci95"], metrics["acc_w_tie"]["macro_ci95"] = [51.0, 71.0], [52.0, 72.0]
    results = {"metrics": metrics, "evaluator": {"name": "ev"}, "dataset": {"name": "ds"},
               "split": {"seed": 0, "reference_size": 3, "fingerprint": "f"}}
    lines = format_metrics_table(results).splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[4:7]}  # micro, its CI (2 tokens), macro, its CI
    assert rows["acc_w_tie"] == ["66.7", "[51.0,", "71.0]", "68.8", "[52.0,", "72.0]"]  # 4/6; (2.5/4 + 1.5/2) / 2
    assert rows["acc_wo_tie"][0] == "40.0" and rows["acc_wo_tie"][3] == "41.7"  # 2/5; (1/3 + 1/2) / 2
    assert rows["decisive_acc"][0] == "66.7" and rows["decisive_acc"][3] == "75.0"  # 2/3; (1/2 + 1) / 2
    assert "targets 6 (decisive gold 5, gold ties 1), users 2" in lines
    assert "predicted ties 0.333, invalid 0.167, coverage 0.600" in lines
