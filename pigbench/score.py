"""Score saved predictions of a model that ran outside pigbench into a validated results file.

``pigbench score --dataset NAME [split flags] --predictions FILE --name NAME`` recomputes the split
from the same flags given to ``pigbench export-episodes``, reads the predictions JSONL, and writes
``<output>/<dataset>/<NAME>[__<variant>].json`` through the runner's own results code (metrics,
bootstrap CIs, provenance, predictions JSONL with its hash).

The predictions file: a header line, then one line per sample, in any order::

    {"fingerprint": "b4b04e7f998e35c2", "models": {"model": "THUDM/VisionReward-Image", ...}, "config": {...}}
    {"sample_id": "user0000/user0000/p011/0-1", "score_a": 1.73, "score_b": -0.41}
    {"sample_id": "user0000/user0000/p011/0-2", "choice": "B", "rationale": "...", "raw_text": "..."}
    {"sample_id": "user0000/user0000/p011/0-3", "choice": "INVALID", "error": "CUDA OOM on this sample"}

* header: ``fingerprint`` (required: the manifest's), ``models`` (model ids, revisions, hardware:
  recorded in the results) and ``config`` (the producer's settings: hashed into the config hash);
* a sample: ``sample_id`` and either ``choice`` (A, B, TIE or INVALID) or both ``score_a`` and
  ``score_b`` (higher = preferred; null = failed), turned into a label with ``--tie-threshold``.
  A line with both: the choice is the label and the scores are kept; scores that favour another
  answer set ``extra.contradicts_totals``, counted in the results' ``answer_quality``.
  Optional: ``rationale``, ``raw_text``, ``error``, ``extra`` (an object) and ``dimensions``
  (objects with ``name`` and optional ``definition``, ``score_a``, ``score_b``).

A wrong fingerprint, a malformed line, a duplicate, unknown or missing sample id is a
:class:`SavedOutputsError` naming the lines and ids at fault; nothing is written then.

examples:
  pigbench score --dataset demo --predictions predictions.jsonl --name my-model
  pigbench score --dataset demo --limit 200 --predictions predictions.jsonl --name my-model --uses-references --output results/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

from pigbench.adapter import DatasetError
from pigbench.evaluator import Evaluator, EvaluatorConfig, Kind
from pigbench.export_episodes import add_split_arguments, split_config, split_flags
from pigbench.protocol import Dimension, Episode, Label, Prediction, contradicts, label_from_delta
from pigbench.registry import RegistryError
from pigbench.report_table import format_metrics_table
from pigbench.results import validate_results
from pigbench.runner import RunConfig, load_split, writable_dir, write_run_results

HEADER_KEYS = {"fingerprint", "models", "config"}
SAMPLE_KEYS = {"sample_id", "choice", "score_a", "score_b", "rationale", "raw_text", "error", "extra", "dimensions"}
DIMENSION_KEYS = {"name", "definition", "score_a", "score_b"}
SHOWN = 5  # ids or lines quoted per error
HEADER_EXAMPLE = ('e.g. {"fingerprint": "<fingerprint from manifest.json>"} '
                  "(export-episodes writes it as predictions_header)")


class SavedOutputsError(ValueError):
    """The predictions file does not fit the split or the format; the message names lines and ids."""


@dataclass(frozen=True)
class SavedOutputsConfig(EvaluatorConfig):
    """The scoring settings plus the producer's own (from the header): together, the config hash."""

    tie_threshold: float = 0.0  # tau on score_a - score_b; lines with a choice ignore it
    producer: dict = field(default_factory=dict)  # the header's "config"


class SavedOutputs(Evaluator):
    """Predictions read from a file, served per episode; stands in for the external model."""

    Config: ClassVar[type[EvaluatorConfig]] = SavedOutputsConfig

    def __init__(self, name: str, config: SavedOutputsConfig, predictions: Mapping[str, Prediction],
                 kind: Kind, uses_references: bool, description: str, provenance: dict[str, Any]) -> None:
        super().__init__(config)
        self.name, self.kind, self.uses_references, self.description = name, kind, uses_references, description
        self._predictions = dict(predictions)
        self._provenance = provenance

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        return [self._predictions[e.sample_id] for e in episodes]

    def provenance(self) -> dict[str, Any]:
        return dict(self._provenance)


@dataclass
class SavedFile:
    """A parsed predictions file: header and predictions in file order (ids may repeat)."""

    header: dict[str, Any]
    lines: list[tuple[int, Prediction]]  # (line number, prediction)
    sha256: str
    choices: int  # lines that give a choice rather than scores


def read_predictions(path: Path, tie_threshold: float = 0.0) -> SavedFile:
    """Parse and check every line; raises :class:`SavedOutputsError` listing the malformed ones."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SavedOutputsError(f"cannot read predictions file {path}: {exc}") from None
    rows: list[tuple[int, Any]] = []
    problems: list[tuple[int, str]] = []  # (line number, what is wrong): listed in line order
    nonblank = [(n, line) for n, line in enumerate(data.decode("utf-8-sig", errors="replace").splitlines(), 1)
                if line.strip()]
    if not nonblank:
        raise SavedOutputsError(f"{path}: no lines")
    for number, line in nonblank:
        try:
            rows.append((number, _loads(line)))
        except json.JSONDecodeError as exc:
            if number == nonblank[0][0]:
                raise SavedOutputsError(f"{path}: line {number} is not JSON ({exc.msg} at column {exc.colno}); "
                                        f"it must be the header naming the split, {HEADER_EXAMPLE}") from None
            problems.append((number, f"not JSON ({exc.msg})"))
    first_line, header = rows[0]
    if not isinstance(header, dict) or "sample_id" in header or "fingerprint" not in header:
        raise SavedOutputsError(f"{path}: line {first_line} must be the header naming the split, {HEADER_EXAMPLE}")
    unknown = set(header) - HEADER_KEYS
    if unknown:
        problems.append((first_line, f"unknown header field(s) {', '.join(sorted(unknown))} "
                                     f"(known: {', '.join(sorted(HEADER_KEYS))})"))
    for key in ("models", "config"):
        if not isinstance(header.get(key, {}), dict):
            problems.append((first_line, f"header field {key!r} must be an object"))
    lines = []
    choices = sum(isinstance(row, dict) and "choice" in row for _, row in rows[1:])
    for number, row in rows[1:]:
        try:
            lines.append((number, _prediction(row, tie_threshold)))
        except ValueError as exc:
            problems.append((number, str(exc)))
    if problems:
        listed = [f"line {number}: {problem}" for number, problem in sorted(problems)[:10]]
        raise SavedOutputsError(f"{path}: {len(problems)} malformed line(s):\n  " + "\n  ".join(listed)
                                + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""))
    return SavedFile(header, lines, hashlib.sha256(data).hexdigest(), choices)


def _loads(line: str) -> Any:
    """``json.loads``; a value nested deeper than the recursion limit is a JSONDecodeError too."""
    try:
        return json.loads(line)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", line, 0) from None


def _prediction(row: Any, tau: float) -> Prediction:
    """One sample line as a Prediction; ValueError says what is wrong."""
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    unknown = set(row) - SAMPLE_KEYS
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(SAMPLE_KEYS))})")
    sid = row.get("sample_id")
    if not isinstance(sid, str) or not sid:
        raise ValueError("no sample_id (a non-empty string)")
    texts = {k: _optional(row, k, str) for k in ("rationale", "raw_text", "error")}
    extra = _optional(row, "extra", dict) or {}
    score_a, score_b = _score(row, "score_a", sid), _score(row, "score_b", sid)
    if "choice" in row:
        choice = row["choice"]
        if not isinstance(choice, str) or choice.upper() not in Label.__members__:
            raise ValueError(f"sample {sid!r}: choice {choice!r} is not one of A, B, TIE, INVALID")
        label = Label[choice.upper()]
        if contradicts(label, score_a, score_b):
            extra = {**extra, "contradicts_totals": True}
    elif "score_a" in row and "score_b" in row:
        label = Label.INVALID if score_a is None or score_b is None else label_from_delta(score_a - score_b, tau)
        if label == Label.INVALID and not texts["error"]:
            texts["error"] = "no score for one of the images"
    else:
        raise ValueError(f"sample {sid!r}: needs a choice, or both score_a and score_b")
    if label == Label.INVALID and not texts["error"]:
        texts["error"] = "marked INVALID in the predictions file"
    return Prediction(sid, label, score_a, score_b, raw_text=texts["raw_text"], rationale=texts["rationale"],
                      dimensions=_dimensions(row.get("dimensions"), sid), error=texts["error"], extra=extra)


def _optional(row: dict, key: str, typ: type) -> Any:
    value = row.get(key)
    if value is not None and not isinstance(value, typ):
        raise ValueError(f"sample {row.get('sample_id')!r}: {key} must be a {typ.__name__}, not {type(value).__name__}")
    return value


def _score(row: dict, key: str, sid: str) -> Optional[float]:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"sample {sid!r}: {key} must be a number or null, not {value!r}")
    return float(value) if math.isfinite(value) else None


def _dimensions(raw: Any, sid: str) -> list[Dimension]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"sample {sid!r}: dimensions must be a list")
    out = []
    for k, item in enumerate(raw, 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or set(item) - DIMENSION_KEYS:
            raise ValueError(f"sample {sid!r}: dimension {k} must be an object with a name and only "
                             f"{', '.join(sorted(DIMENSION_KEYS))}")
        definition = item.get("definition", "")
        if not isinstance(definition, str):
            raise ValueError(f"sample {sid!r}: dimension {k} definition must be a string")
        out.append(Dimension(item["name"], definition, _score(item, "score_a", sid), _score(item, "score_b", sid)))
    return out


def match_split(saved: SavedFile, episodes: Sequence[Episode], fingerprint: str, flags: Sequence[str]) -> dict[str, Prediction]:
    """The predictions by sample id, after checking fingerprint, duplicates, unknown and missing ids."""
    declared = saved.header["fingerprint"]
    if declared != fingerprint:
        raise SavedOutputsError(
            f"the predictions were made on split {declared!r}, but {shlex.join(flags)} gives split {fingerprint!r}. "
            "Pass the split flags that export-episodes was given (manifest.json lists them as split_flags).")
    seen: dict[str, int] = {}
    duplicates = []
    for number, pred in saved.lines:
        if pred.sample_id in seen:
            duplicates.append(f"{pred.sample_id!r} (lines {seen[pred.sample_id]} and {number})")
        seen.setdefault(pred.sample_id, number)
    if duplicates:
        raise SavedOutputsError(f"{len(duplicates)} duplicate sample id(s): {_listing(duplicates)}")
    wanted = {e.sample_id for e in episodes}
    unknown = [f"{sid!r} (line {n})" for sid, n in seen.items() if sid not in wanted]
    if unknown:
        raise SavedOutputsError(f"{len(unknown)} sample id(s) are not in the split: {_listing(unknown)}")
    missing = [repr(e.sample_id) for e in episodes if e.sample_id not in seen]
    if missing:
        raise SavedOutputsError(
            f"{len(missing)} of {len(episodes)} samples of the split have no prediction: {_listing(missing)}. "
            'Write a line for each, e.g. {"sample_id": ..., "choice": "INVALID", "error": "why"} for a failure.')
    return {pred.sample_id: pred for _, pred in saved.lines}


def _listing(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def score_saved_outputs(
    config: RunConfig, predictions_file: Path, kind: Optional[Kind] = None, uses_references: bool = False,
    description: str = "",
) -> tuple[dict[str, Any], Path]:
    """Check ``predictions_file`` against the split of ``config`` and write the results file.

    ``config.evaluator`` is the name the results are filed under: a file name, not a registered
    evaluator's (its results file would be overwritten and the scores taken for its); ``kind``
    defaults to "judge" when any line has a choice, else "scalar". A nonzero tie threshold when every line
    has a choice is a :class:`SavedOutputsError`. Returns the results dict and its path.
    """
    start = time.time()
    check_saved_outputs_name(config.evaluator)
    saved = read_predictions(predictions_file, config.tie_threshold or 0.0)
    if config.tie_threshold and saved.lines and saved.choices == len(saved.lines):  # it would only rename the file
        raise SavedOutputsError(f"--tie-threshold applies only to lines with score_a and score_b; every line of "
                                f"{predictions_file} has a choice, which is its label")
    adapter, split = load_split(config)
    by_id = match_split(saved, split.episodes, split.fingerprint, split_flags(config))
    provenance = {**saved.header.get("models", {}),
                  "saved_outputs": {"file": predictions_file.name, "sha256": saved.sha256, "lines": len(saved.lines)}}
    evaluator = SavedOutputs(
        config.evaluator, SavedOutputsConfig(config.tie_threshold or 0.0, saved.header.get("config", {})), by_id,
        kind or ("judge" if saved.choices else "scalar"), uses_references, description, provenance)
    served = {p.sample_id: p.to_json() for p in evaluator.predict(split.episodes)}
    writable_dir(Path(config.output) / config.dataset, "results directory (--output)")
    return write_run_results(config, evaluator, adapter, split, served, 0, start)


def check_saved_outputs_name(name: str) -> None:
    """ValueError for a ``--name`` that is not a plain file name or that a registered evaluator has."""
    from pigbench.registry import evaluators

    if not name or name.startswith(".") or any(c in name for c in "/\\") or name != name.strip():
        raise ValueError(f"--name {name!r} must be a plain file name: no slash, no leading dot or outer spaces")
    if name in evaluators.names():
        raise ValueError(f"--name {name!r} is the name of a registered evaluator ({evaluators.source(name)}): its runs "
                         f"file their results under it, so pick another name (e.g. {name}-external)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_split_arguments(p)
    p.add_argument("--predictions", type=Path, required=True, help="predictions JSONL (format: see above)")
    p.add_argument("--name", required=True, help="evaluator name the results are filed under, e.g. visionreward")
    p.add_argument("--output", "--out", default="results", help="results directory (default results/)")
    p.add_argument("--tie-threshold", type=float, help="tau: |score_a - score_b| <= tau predicts TIE (default 0)")
    p.add_argument("--kind", choices=["baseline", "scalar", "similarity", "judge", "reasoning"],
                   help="evaluator kind (default: judge if any line has a choice, else scalar)")
    p.add_argument("--uses-references", action="store_true", help="the model saw the users' references")
    p.add_argument("--description", default="", help="one line on the model, for the leaderboard")
    p.add_argument("--variant", help="results file suffix (default: derived from non-default settings)")


def main(args: argparse.Namespace) -> int:
    try:
        config = split_config(args, evaluator=args.name, output=args.output, tie_threshold=args.tie_threshold,
                              variant=args.variant, device="external", batch_size=0)
        results, path = score_saved_outputs(config, args.predictions, args.kind, args.uses_references, args.description)
    except (SavedOutputsError, DatasetError, RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = validate_results(path)
    for problem in problems:
        print(f"INVALID {problem}", file=sys.stderr)
    print(format_metrics_table(results))
    print(f"\nresults: {path}{'' if problems else ' (validated)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("score"))
