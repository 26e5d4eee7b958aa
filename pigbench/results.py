"""The results file: its schema (documented field by field), writing, loading and validation.

A run writes two files under ``<output>/<dataset>/``::

    <evaluator>[__<variant>].json                 metrics, per-user table, provenance
    <evaluator>[__<variant>].predictions.jsonl    one line per target: sample_id, user_id, gold, prediction

The JSONL is written first, then the JSON, which points to it by relative path and records its
SHA-256 and row count, so the two files are one pair: a run stopped between the two writes leaves
the earlier run's JSON beside the new JSONL, and a JSONL truncated, edited or copied from another
run no longer matches the JSON; :func:`validate_results` refuses either in one line naming both
files (run again to write both). It also recomputes every metric from the JSONL alone and reports
any mismatch; the report and the leaderboard admit only files that pass it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import jsonschema

from pigbench.atomic_file import remove_stale_temps, write_atomic
from pigbench.metrics import MISSING, Judged, compute_metrics, metric_differences
from pigbench.protocol import Episode, Label

SCHEMA_VERSION = "1.0"

_ACC = {
    "type": "object",
    "description": "An accuracy in percent: micro average over targets (headline), macro over users, 95% CIs.",
    "required": ["micro", "micro_ci95", "macro", "macro_ci95"],
    "properties": {
        "micro": {"type": ["number", "null"], "description": "mean over targets, in percent"},
        "micro_ci95": {"type": ["array", "null"], "description": "[low, high] cluster-bootstrap CI, percent"},
        "macro": {"type": ["number", "null"], "description": "mean of per-user accuracies, in percent"},
        "macro_ci95": {"type": ["array", "null"], "description": "[low, high] cluster-bootstrap CI, percent"},
    },
}

RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": f"pigbench results file, schema version {SCHEMA_VERSION}",
    "type": "object",
    "required": ["schema_version", "evaluator", "dataset", "split", "metrics", "predictions", "provenance"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION, "description": "version of this schema"},
        "evaluator": {
            "type": "object",
            "description": "what was evaluated",
            "required": ["name", "version", "kind", "uses_references", "config", "config_hash"],
            "properties": {
                "name": {"type": "string", "description": "registry name, e.g. 'pickscore'"},
                "variant": {"type": ["string", "null"], "description": "file-name suffix distinguishing runs"},
                "version": {"type": "string", "description": "evaluator implementation version"},
                "kind": {"enum": ["baseline", "scalar", "similarity", "judge", "reasoning"]},
                "uses_references": {"type": "boolean", "description": "whether it reads the user's references"},
                "config": {"type": "object", "description": "the full evaluator config dataclass"},
                "config_hash": {"type": "string", "description": "hash of name, version and config (and, for a judge "
                                                                  "with scoring=probs, how answer probabilities are read)"},
                "tie_threshold": {"type": ["number", "null"], "description": "tau applied to score deltas"},
                "tie_threshold_source": {"type": ["string", "object"],
                                         "description": "'fixed', or the calibration record (pigbench.calibration)"},
                "swap": {"type": "boolean", "description": "position swap run (both orders asked)"},
                "models": {"type": "object", "description": "model ids/paths with revisions or file hashes"},
            },
        },
        "dataset": {
            "type": "object",
            "description": "where the data came from",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "source": {"type": "object", "description": "source files or hub revision (adapter provenance)"},
            },
        },
        "split": {
            "type": "object",
            "description": "the per-user split: two results are comparable only if fingerprints match",
            "required": ["seed", "reference_size", "fingerprint", "users", "targets"],
            "properties": {
                "seed": {"type": "integer"},
                "reference_size": {"type": ["integer", "string"], "description": "K, or 'dynamic'"},
                "fingerprint": {"type": "string", "description": "hash of ordered sample ids, reference ids, golds"},
                "users": {"type": "integer"},
                "targets": {"type": "integer", "description": "targets evaluated (after --limit)"},
                "targets_before_limit": {"type": "integer"},
                "skipped_users": {"type": "object", "description": "reason -> count"},
                "skipped_records": {"type": "object", "description": "reason -> count"},
                "skip_examples": {"type": "object", "description": "reason -> a few offending ids"},
            },
        },
        "metrics": {
            "type": "object",
            "description": "all metrics of protocol section 4, recomputable from the predictions",
            "required": ["n", "n_decisive_gold", "gold_ties", "users", "predicted_tie_rate", "invalid_rate",
                         "coverage", "acc_w_tie", "acc_wo_tie", "decisive_acc", "bootstrap", "per_user"],
            "properties": {
                "n": {"type": "integer", "description": "targets N"},
                "n_decisive_gold": {"type": "integer", "description": "|S|, targets whose gold is not TIE"},
                "gold_ties": {"type": "integer"},
                "users": {"type": "integer"},
                "predicted_tie_rate": {"type": "number"},
                "invalid_rate": {"type": "number"},
                "coverage": {"type": ["number", "null"], "description": "share of S with a decisive prediction"},
                "swap_inconsistency_rate": {"type": ["number", "null"]},
                "acc_w_tie": _ACC,
                "acc_wo_tie": _ACC,
                "decisive_acc": _ACC,
                "bootstrap": {
                    "type": "object",
                    "description": "resamples, seed, unit ('user'), level",
                    "required": ["resamples", "seed"],
                    "properties": {"resamples": {"type": "integer", "minimum": 0},
                                   "seed": {"type": "integer", "minimum": 0}},
                },
                "per_user": {"type": "array", "description": "per-user n and accuracies"},
            },
        },
        "failures": {
            "type": "object",
            "description": "samples whose prediction is INVALID because of an error: count and reasons",
            "required": ["count", "reasons"],
            "properties": {"count": {"type": "integer"}, "reasons": {"type": "object"}},
        },
        "answer_quality": {
            "type": "object",
            "description": "generative answers that parsed badly: 'unparseable' (INVALID, by reason), "
                           "'format_violations' and 'contradicts_totals' (totals disagree with the answer)",
        },
        "predictions": {
            "type": "object",
            "description": "the per-sample predictions file, written just before this file: the pair is "
                           "valid only while that file's SHA-256 and rows are the ones recorded here",
            "required": ["path", "sha256", "count"],
            "properties": {
                "path": {"type": "string", "description": "relative to this file's directory"},
                "sha256": {"type": "string", "description": "hex SHA-256 of the predictions file's bytes"},
                "count": {"type": "integer", "description": "its rows (the split's targets)"},
            },
        },
        "provenance": {
            "type": "object",
            "description": "what ran, where and how",
            "required": ["pigbench_version", "git_commit", "created_at", "hardware", "batch_size", "wall_time_s"],
            "properties": {
                "pigbench_version": {"type": "string"},
                "git_commit": {"type": ["string", "null"], "description": "HEAD of the pigbench checkout, if any"},
                "git_dirty": {"type": ["boolean", "null"]},
                "created_at": {"type": "string", "description": "UTC ISO-8601"},
                "command": {"type": "string"},
                "hardware": {"type": "object", "description": "platform, CPU count, GPU name if used"},
                "device": {"type": "string"},
                "batch_size": {"type": "integer", "description": "batch size actually used"},
                "wall_time_s": {"type": "number", "description": "this invocation's wall time"},
                "resumed_samples": {"type": "integer", "description": "predictions taken from the store"},
                "world_size": {"type": "integer", "description": "data-parallel processes of this invocation"},
            },
        },
    },
}


_VALIDATOR = jsonschema.Draft202012Validator(RESULTS_SCHEMA)

# Optional fields of a predictions row's ``prediction`` (Prediction.to_json): allowed JSON types, as described.
PREDICTION_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "score_a": ((int, float, type(None)), "a number or null"),
    "score_b": ((int, float, type(None)), "a number or null"),
    "raw_text": ((str, type(None)), "a string or null"),
    "rationale": ((str, type(None)), "a string or null"),
    "error": ((str, type(None)), "a string or null"),
    "dimensions": ((list,), "a list"),
    "extra": ((dict,), "an object"),
}


def _check_schema(results: dict[str, Any]) -> None:
    """``jsonschema.validate`` without re-checking the (constant) schema on every call, which
    took about 0.2 s per results file."""
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(results))
    if error is not None:
        raise error


class ResultsError(ValueError):
    """A results file is malformed or inconsistent; the message names the file and the problem."""


def prediction_rows(episodes: Iterable[Episode], predictions: dict[str, dict]) -> list[dict]:
    """JSONL rows in split order: sample_id, user_id, target prompt, gold, prediction (JSON dict)."""
    return [
        {"sample_id": e.sample_id, "user_id": e.user_id, "prompt": e.target.prompt, "gold": e.target.gold.value,
         "prediction": predictions[e.sample_id]}
        for e in episodes
    ]


def judged_from_rows(rows: Iterable[dict]) -> list[Judged]:
    """Metric inputs from prediction rows (:func:`judged_of` each)."""
    return [judged_of(row) for row in rows]


def judged_of(row: dict) -> Judged:
    """The metric input of one prediction row (the swap flag comes from the prediction's extra)."""
    pred = row["prediction"]
    swap = pred.get("extra", {}).get("swap")
    return Judged(row["user_id"], Label(row["gold"]), Label(pred["label"]),
                  None if swap is None else bool(swap["inconsistent"]))


def write_results(json_path: Path, results: dict[str, Any], rows: list[dict]) -> None:
    """Write the predictions JSONL then the results JSON, which records the JSONL's SHA-256 and row
    count, each whole or not at all (:func:`~pigbench.atomic_file.write_atomic`). A writer stopped
    between the two leaves an earlier JSON beside the new JSONL, a pair that :func:`load_results`
    refuses until the run is repeated. Temporary files that killed writers left in the folder are
    removed first (:func:`~pigbench.atomic_file.remove_stale_temps`)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(json_path.parent)
    jsonl_path = json_path.with_name(json_path.name[: -len(".json")] + ".predictions.jsonl")
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    _atomic_write(jsonl_path, data)
    results["predictions"] = {"path": jsonl_path.name, "sha256": hashlib.sha256(data).hexdigest(), "count": len(rows)}
    _check_schema(results)
    _atomic_write(json_path, (json.dumps(results, indent=2, sort_keys=False) + "\n").encode())


def _atomic_write(path: Path, data: bytes) -> None:
    """:func:`~pigbench.atomic_file.write_atomic`; an OSError becomes a :class:`ResultsError` naming ``path``."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None


def load_results(path: str | Path) -> tuple[dict[str, Any], Iterator[dict]]:
    """The results dict, checked against the schema, and an iterator over its prediction rows, each
    read and checked as it comes, so that memory holds one row at a time whatever the file's size.

    Raises :class:`ResultsError` on any structural problem: this call for the results JSON, the
    iteration for the predictions file. The latter's problems are reported once it has been read to
    its end (hashed whole), with the precedence of reading it at once: the recorded sha256 not
    matching, then its first byte that is not UTF-8, then its first malformed row (``line N``
    counting lines as :meth:`str.splitlines` does). No row from the first bad line on is yielded;
    rows yielded before a problem is raised are no result of a valid file."""
    path = Path(path)
    try:
        results = json.loads(path.read_bytes().decode())
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: cannot read results JSON: {_not_utf8(exc)}") from None
    except (OSError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise ResultsError(f"{path}: cannot read results JSON: {exc}") from None
    try:
        _check_schema(results)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ResultsError(f"{path}: schema violation at {where}: {exc.message}") from None
    if Path(results["predictions"]["path"]).is_absolute() or ".." in Path(results["predictions"]["path"]).parts:
        raise ResultsError(f"{path}: predictions path must be a file name beside the results file")
    return results, _prediction_rows(path, path.parent / results["predictions"]["path"], results["predictions"]["sha256"])


def _prediction_rows(path: Path, pred_path: Path, sha256: str) -> Iterator[dict]:
    """The checked rows of the predictions file ``pred_path`` of results file ``path``, read line by
    line while the whole file is hashed against ``sha256`` (see :func:`load_results` for the errors).
    Lines are split at newline bytes first (no UTF-8 character contains one), then as
    :meth:`str.splitlines` splits the decoded text (which also breaks at carriage returns and the like)."""
    hashed = hashlib.sha256()
    problem: Optional[str] = None  # the first line that is not UTF-8, else the first malformed row
    not_utf8 = False
    row_line = 0
    try:
        with pred_path.open("rb") as file:
            for byte_line, chunk in enumerate(file, 1):
                hashed.update(chunk)
                if not_utf8:
                    continue
                try:
                    text = chunk.decode()
                except UnicodeDecodeError as exc:
                    not_utf8, problem = True, f"{pred_path}: {_not_utf8(exc, byte_line)}"
                    continue
                if problem is not None:
                    continue  # a later line may still not be UTF-8, which is reported first
                for line in text.splitlines():
                    row_line += 1
                    try:
                        row = json.loads(line)
                        _check_row(row)
                    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
                        problem = f"{pred_path}: line {row_line}: malformed prediction row ({exc})"
                        break
                    yield row
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read predictions file {pred_path.name}: {exc.strerror or exc}; "
                           f"{PAIR_REMEDY}") from None
    if hashed.hexdigest() != sha256:
        raise ResultsError(f"{path}: predictions file {pred_path.name} does not match the recorded sha256 (another "
                           f"run's, or changed since); {PAIR_REMEDY}")
    if problem is not None:
        raise ResultsError(problem)


PAIR_REMEDY = "run again to write both files"
"""What a results file whose predictions file is missing or not its own needs: the same command writes the
pair again (a run takes its predictions from its store)."""


def _not_utf8(exc: UnicodeDecodeError, first_line: int = 1) -> str:
    """Where decoding failed, e.g. ``line 3: byte 12 (0xff) is not UTF-8`` (bytes counted from 1;
    ``first_line``: the number of the line the decoded bytes start with)."""
    data, start = exc.object, exc.start
    line, column = data.count(b"\n", 0, start) + first_line, start - data.rfind(b"\n", 0, start)
    return f"line {line}: byte {column} ({data[start]:#04x}) is not UTF-8"


def _check_row(row: Any) -> None:
    """Raise ValueError naming the first field of a prediction row that is missing or mistyped.

    A row is an object with ``sample_id`` and ``user_id`` (strings), ``gold`` (A, B or TIE) and
    ``prediction``: an object with ``label`` (A, B, TIE or INVALID), the optional fields of
    :data:`PREDICTION_FIELDS` and, if ``extra`` has ``swap``, an object with ``inconsistent``."""
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    for key in ("sample_id", "user_id"):
        if not isinstance(row.get(key), str):
            raise ValueError(f"{key} must be a string, not {_shown(row.get(key))}")
    _check_label(row.get("gold"), "gold", GOLD_LABELS)
    pred = row.get("prediction")
    if not isinstance(pred, dict):
        raise ValueError(f"prediction must be an object, not {_shown(pred)}")
    _check_label(pred.get("label"), "prediction.label", PREDICTION_LABELS)
    for key, (types, description) in PREDICTION_FIELDS.items():
        if key in pred and (isinstance(pred[key], bool) or not isinstance(pred[key], types)):
            raise ValueError(f"prediction.{key} must be {description}, not {_shown(pred[key])}")
    swap = pred.get("extra", {}).get("swap")
    if swap is not None and not (isinstance(swap, dict) and "inconsistent" in swap):
        raise ValueError(f"prediction.extra.swap must be an object with 'inconsistent', not {_shown(swap)}")


GOLD_LABELS = tuple(label.value for label in (Label.A, Label.B, Label.TIE))
PREDICTION_LABELS = tuple(label.value for label in Label)


def _check_label(value: Any, key: str, allowed: tuple[str, ...]) -> None:
    """ValueError naming ``key`` unless ``value`` is one of the label strings ``allowed`` (checked
    per row: the allowed values are built once, which was a quarter of validation's time)."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {_shown(value)}")


def _shown(value: Any, limit: int = 40) -> str:
    """A JSON value as quoted in an error message: one line, at most ``limit`` characters."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_results(path: str | Path) -> list[str]:
    """Problems found (empty when valid): schema, hash, duplicate ids, and any metric that differs
    from the value recomputed from the predictions, named field by field ("metrics.acc_w_tie.micro:
    stored 69.5, recomputed 68.75"; the first :data:`METRIC_FIELDS_LISTED`, then a count of the rest).
    The predictions are read one row at a time (:func:`load_results`), keeping only their recount."""
    recount = PredictionsRecount()
    try:
        results, rows = load_results(path)
        for row in rows:
            recount.add(row)
    except ResultsError as exc:
        return [str(exc)]
    return recount.problems(path, results)


def error_reason(error: str) -> str:
    """The key errors are counted under: their first line, truncated."""
    return error.splitlines()[0][:200] if error else ""


class FailureCounts:
    """The results' ``failures``, counted one prediction at a time: predictions with an error
    (failed, as the store counts them), by reason."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    def add(self, prediction: dict) -> None:
        if prediction.get("error") is not None:
            self.reasons[error_reason(prediction["error"])] += 1

    def summary(self) -> dict[str, Any]:
        return {"count": sum(self.reasons.values()), "reasons": dict(self.reasons)}


class AnswerQualityCounts:
    """The results' ``answer_quality``, counted one prediction at a time: generative answers that
    parsed badly: unparseable (INVALID without an error, by reason), format violations, and totals
    contradicting the answer (PIGReward's checks)."""

    def __init__(self) -> None:
        self.unparseable: Counter[str] = Counter()
        self.violations = self.contradictions = 0

    def add(self, prediction: dict) -> None:
        extra = prediction.get("extra") or {}
        for reason in (extra.get("invalid_reason"), (extra.get("swap") or {}).get("other_invalid_reason")):
            if reason:  # a swap run's two answers count apart
                self.unparseable[error_reason(str(reason))] += 1
        self.violations += bool(extra.get("format_violations"))
        self.contradictions += bool(extra.get("contradicts_totals"))

    def summary(self) -> dict[str, Any]:
        return {"unparseable": sum(self.unparseable.values()), "unparseable_reasons": dict(self.unparseable),
                "format_violations": self.violations, "contradicts_totals": self.contradictions}


def failure_summary(rows: Iterable[dict]) -> dict[str, Any]:
    """The results' ``failures`` of prediction rows (:class:`FailureCounts`)."""
    counts = FailureCounts()
    for row in rows:
        counts.add(row["prediction"])
    return counts.summary()


def answer_quality(rows: Iterable[dict]) -> dict[str, Any]:
    """The results' ``answer_quality`` of prediction rows (:class:`AnswerQualityCounts`)."""
    counts = AnswerQualityCounts()
    for row in rows:
        counts.add(row["prediction"])
    return counts.summary()


class PredictionsRecount:
    """What validation needs of a results file's predictions, gathered one checked row at a time
    (:meth:`add`) so that the rows themselves can be dropped: their count, the set of sample ids,
    the failures and answer quality counts, and each row's metric input (:func:`judged_of`; equal
    inputs share one object, so the list costs a pointer per row)."""

    def __init__(self) -> None:
        self.sample_ids: set[str] = set()
        self.failures = FailureCounts()
        self.answer_quality = AnswerQualityCounts()
        self.judged: list[Judged] = []
        self._shared: dict[Judged, Judged] = {}

    def add(self, row: dict) -> None:
        """Count one row checked by :func:`load_results`."""
        self.sample_ids.add(row["sample_id"])
        self.failures.add(row["prediction"])
        self.answer_quality.add(row["prediction"])
        judged = judged_of(row)
        self.judged.append(self._shared.setdefault(judged, judged))

    def problems(self, path: str | Path, results: dict[str, Any]) -> list[str]:
        """:func:`validate_results`'s problems of results file ``path`` (``results``, as loaded) with
        these predictions: duplicate ids, counts (targets, users), failures and answer quality
        recounted, and metrics recomputed (differing fields named as in :func:`validate_results`)."""
        problems, rows = [], len(self.judged)
        if len(self.sample_ids) != rows:
            problems.append(f"{path}: duplicate sample ids in predictions")
        recorded = [f"{field} {count}" for field, count in (("predictions.count", results["predictions"]["count"]),
                                                            ("split.targets", results["split"]["targets"])) if count != rows]
        if recorded:
            problems.append(f"{path}: predictions file {results['predictions']['path']} has {rows} rows; "
                            f"the results file records {' and '.join(recorded)}")
        users = len({j.user_id for j in self._shared})
        if results["split"]["users"] != users:
            problems.append(f"{path}: split users {results['split']['users']} differs from the {users} users of the predictions")
        for name, recount in (("failures", self.failures.summary()), ("answer_quality", self.answer_quality.summary())):
            if name in results and results[name] != recount:
                problems.append(f"{path}: {name} {results[name]!r} differs from the predictions' {recount!r}")
        if not rows:
            return problems + [f"{path}: no predictions"]
        boot = results["metrics"]["bootstrap"]  # integers by the schema, though JSON may spell them 1000.0
        recomputed = compute_metrics(self.judged, n_bootstrap=int(boot["resamples"]), seed=int(boot["seed"]))
        differences = [difference for key, value in recomputed.items()
                       for difference in metric_differences(results["metrics"].get(key, MISSING), value, f"metrics.{key}")]
        problems += [f"{path}: {field}: stored {_shown_metric(stored)}, recomputed {_shown_metric(value)}"
                     for field, stored, value in differences[:METRIC_FIELDS_LISTED]]
        if len(differences) > METRIC_FIELDS_LISTED:
            problems.append(f"{path}: ... and {len(differences) - METRIC_FIELDS_LISTED} more metric field(s) "
                            "differ from those recomputed")
        return problems


METRIC_FIELDS_LISTED = 5  # differing metric fields named one by one; the rest are counted


def _shown_metric(value: Any) -> str:
    """A stored or recomputed metric value as quoted by validation ("missing" where a side lacks it)."""
    return "missing" if value is MISSING else _shown(value, limit=60)
