"""Saved-output scoring: export-episodes -> an "external" model -> score, and every score error."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pigbench.cli import main as pigbench
from pigbench.evaluators.colorfulness import colorfulness
from pigbench.metrics import metric_differences
from pigbench.results import validate_results
from pigbench.runner import RunConfig, load_split, run
from pigbench.score import SavedOutputsError, score_saved_outputs

LIMIT = 24
SPLIT = ["--dataset", "demo", "--dataset-option", "users=3", "--limit", str(LIMIT)]


def split_config(tmp_path, **kw):
    base = dict(dataset="demo", dataset_options={"users": "3"}, limit=LIMIT, output=str(tmp_path / "results"),
                cache_dir=str(tmp_path / "cache"), progress=False)
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert pigbench(["export-episodes", *SPLIT, "--out", str(out)]) == 0
    return out


def episodes(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


def external_colorfulness(out: Path) -> list[dict]:
    """What an outside script does: read the export's files, score each target image."""
    lines = []
    for ep in episodes(out):
        a, b = (colorfulness(np.asarray(Image.open(out / ep["target"][k]["file"]).convert("RGB")))
                for k in ("image_a", "image_b"))
        lines.append({"sample_id": ep["sample_id"], "score_a": a, "score_b": b})
    return lines


def write(path: Path, header, lines) -> Path:
    rows = ([header] if header is not None else []) + lines
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from keys(v)


def test_export_has_episodes_deduplicated_images_and_fingerprint_but_no_gold(exported, tmp_path):
    manifest = json.loads((exported / "manifest.json").read_text())
    _, split = load_split(split_config(tmp_path))
    eps = episodes(exported)
    assert [e["sample_id"] for e in eps] == [e.sample_id for e in split.episodes]
    assert manifest["fingerprint"] == split.fingerprint == manifest["predictions_header"]["fingerprint"]
    assert not {"gold", "ranks", "label"} & set(keys(eps))
    referenced = {img["file"] for e in eps for img in [e["target"]["image_a"], e["target"]["image_b"]]
                  + [r[side] for r in e["references"] for side in ("preferred", "rejected")]}
    files = {f"images/{p.name}" for p in (exported / "images").iterdir()}
    assert referenced == files and len(files) == manifest["images"]
    hashes = {img.content_hash for e in split.episodes for img in (e.target.image_a, e.target.image_b)}
    hashes |= {img.content_hash for e in split.episodes for r in e.references for img in (r.preferred, r.rejected)}
    assert len(files) == len(hashes)  # one file per distinct content, however often it appears
    assert Image.open(exported / eps[0]["target"]["image_a"]["file"]).size == (64, 64)
    assert manifest["score_command"].startswith("pigbench score --dataset demo --dataset-option users=3")
    # --limit 24 keeps 24 of user0000's 40 targets: 1 user, 120 targets (3 users x 40) before the limit
    assert (manifest["users"], manifest["episodes"], manifest["targets_before_limit"]) == (1, LIMIT, 120)
    assert [(e["user_id"], [(r["preferred"]["id"], r["rejected"]["id"]) for r in e["references"]],
             e["target"]["image_a"]["id"], e["target"]["image_b"]["id"]) for e in eps] == [
        (e.user_id, [(r.preferred.id, r.rejected.id) for r in e.references], e.target.image_a.id, e.target.image_b.id)
        for e in split.episodes]
    first = eps[0]["references"][0]
    assert (first["preferred"]["id"], first["rejected"]["id"]) == ("demo/s0/p029/v0", "demo/s0/p029/v1")
    assert first["preferred"]["file"].startswith(f"images/{split.episodes[0].references[0].preferred.content_hash}.")


def test_round_trip_equals_running_the_evaluator_in_pigbench(exported, tmp_path):
    header = json.loads((exported / "manifest.json").read_text())["predictions_header"]
    header["models"] = {"model": "colorfulness (outside pigbench)", "gpu": "none"}
    preds = write(tmp_path / "preds.jsonl", header, external_colorfulness(exported)[::-1])  # any order
    out = tmp_path / "scored"
    assert pigbench(["score", *SPLIT, "--predictions", str(preds), "--name", "colorfulness-ext",
                     "--output", str(out), "--description", "saved outputs"]) == 0
    (path,) = (out / "demo").glob("colorfulness-ext*.json")
    assert validate_results(path) == []
    scored = json.loads(path.read_text())
    inside = run(split_config(tmp_path, evaluator="colorfulness"))
    assert metric_differences(scored["metrics"], inside.results["metrics"]) == []
    assert scored["split"]["fingerprint"] == inside.results["split"]["fingerprint"]
    ev = scored["evaluator"]
    assert ev["kind"] == "scalar" and ev["models"]["model"].startswith("colorfulness")
    assert ev["models"]["saved_outputs"]["lines"] == LIMIT and scored["provenance"]["device"] == "external"
    rows = [json.loads(x) for x in path.with_name(path.stem + ".predictions.jsonl").read_text().splitlines()]
    inside_rows = [json.loads(x) for x in
                   inside.results_path.with_name(inside.results_path.stem + ".predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"]["label"] for r in rows] == [r["prediction"]["label"] for r in inside_rows]


def test_choices_rationale_dimensions_and_failures_are_kept(exported, tmp_path):
    header = json.loads((exported / "manifest.json").read_text())["predictions_header"]
    header["config"] = {"prompt": "v2"}
    lines = []
    for i, ep in enumerate(episodes(exported)):
        line = {"sample_id": ep["sample_id"], "choice": ["A", "b", "Tie"][i % 3], "rationale": f"because {i}",
                "dimensions": [{"name": "warmth", "definition": "orange vs blue", "score_a": 7, "score_b": 3}]}
        lines.append(line)
    lines[0] = {"sample_id": lines[0]["sample_id"], "choice": "INVALID", "error": "CUDA out of memory"}
    lines[1] = {"sample_id": lines[1]["sample_id"], "score_a": None, "score_b": 0.3}
    results, path = score_saved_outputs(split_config(tmp_path, evaluator="judge-ext"), write(tmp_path / "p.jsonl", header, lines))
    assert validate_results(path) == []
    assert results["evaluator"]["kind"] == "judge" and results["evaluator"]["config"]["producer"] == {"prompt": "v2"}
    assert results["metrics"]["invalid_rate"] == 2 / LIMIT and results["failures"]["count"] == 2
    rows = [json.loads(x)["prediction"] for x in path.with_name(path.stem + ".predictions.jsonl").read_text().splitlines()]
    assert rows[0]["error"] == "CUDA out of memory" and rows[1]["label"] == "INVALID"
    assert [r["label"] for r in rows[2:5]] == ["TIE", "A", "B"]
    assert rows[2]["rationale"] == "because 2" and rows[2]["dimensions"][0] == {
        "name": "warmth", "definition": "orange vs blue", "score_a": 7.0, "score_b": 3.0}


def test_tie_threshold_applies_to_scores(exported, tmp_path):
    preds = write(tmp_path / "p.jsonl", {"fingerprint": json.loads((exported / "manifest.json").read_text())["fingerprint"]},
                  external_colorfulness(exported))
    results, _ = score_saved_outputs(split_config(tmp_path, evaluator="x", tie_threshold=1e9), preds)
    assert results["metrics"]["predicted_tie_rate"] == 1.0 and results["evaluator"]["tie_threshold"] == 1e9


def test_a_tie_threshold_on_choices_only_is_refused(exported, tmp_path, capsys):
    """tau would change nothing but the config hash and file name: refused, as run refuses it for text judges."""
    header = {"fingerprint": json.loads((exported / "manifest.json").read_text())["fingerprint"]}
    preds = write(tmp_path / "p.jsonl", header, [{"sample_id": ep["sample_id"], "choice": "A"} for ep in episodes(exported)])
    out = tmp_path / "results"
    assert pigbench(["score", *SPLIT, "--predictions", str(preds), "--name", "x", "--output", str(out),
                     "--tie-threshold", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tie-threshold applies only to lines with score_a and score_b") and "\n" not in err.strip()
    assert not out.exists()
    assert pigbench(["score", *SPLIT, "--predictions", str(preds), "--name", "x", "--output", str(out),
                     "--tie-threshold", "0"]) == 0


def test_a_tie_threshold_with_some_lines_scored_is_applied(exported, tmp_path):
    """Only a file whose every line has a choice is refused: lines with scores take the threshold."""
    header = {"fingerprint": json.loads((exported / "manifest.json").read_text())["fingerprint"]}
    lines = external_colorfulness(exported)
    lines[0] = {"sample_id": lines[0]["sample_id"], "choice": "A"}
    results, _ = score_saved_outputs(split_config(tmp_path, evaluator="x", tie_threshold=1e9),
                                     write(tmp_path / "p.jsonl", header, lines))
    assert results["evaluator"]["tie_threshold"] == 1e9 and 0 < results["metrics"]["predicted_tie_rate"] < 1


def test_infinite_scores_are_read_as_null_and_the_sample_is_invalid(tmp_path):
    """docs/saved_outputs.md: NaN and infinities are read as null; an infinite score is not decisive here."""
    from pigbench.protocol import Label
    from pigbench.score import read_predictions

    path = tmp_path / "p.jsonl"
    path.write_text('{"fingerprint": "f"}\n{"sample_id": "s1", "score_a": Infinity, "score_b": 0.5}\n'
                    '{"sample_id": "s2", "score_a": 0.5, "score_b": -Infinity, "dimensions": [{"name": "d", "score_a": Infinity}]}\n')
    (_, first), (_, second) = read_predictions(path).lines
    assert (first.label, first.score_a, first.error) == (Label.INVALID, None, "no score for one of the images")
    assert (second.label, second.score_b, second.dimensions[0].score_a) == (Label.INVALID, None, None)


def test_a_lone_choice_makes_a_judge_and_invalid_without_error_gets_one(tmp_path):
    """The first sample line's choice counts (kind judge); INVALID with no error is a failure with a reason."""
    from pigbench.protocol import Label
    from pigbench.score import read_predictions

    path = tmp_path / "p.jsonl"
    path.write_text('{"fingerprint": "f"}\n{"sample_id": "s1", "choice": "invalid"}\n'
                    '{"sample_id": "s2", "score_a": 1, "score_b": 0}\n{"sample_id": "s3", "score_a": 0.5, "score_b": 0.5}\n')
    saved = read_predictions(path)
    (_, first), (_, second), (_, third) = saved.lines
    assert saved.choices == 1 and (first.label, first.error) == (Label.INVALID, "marked INVALID in the predictions file")
    assert (second.label, second.error, third.label) == (Label.A, None, Label.TIE)  # equal scores tie at tau 0


def test_header_may_follow_a_byte_order_mark(exported, tmp_path):
    """Editors on Windows save UTF-8 with a BOM; it is not part of line 1."""
    header = json.loads((exported / "manifest.json").read_text())["predictions_header"]
    lines = [{"sample_id": ep["sample_id"], "choice": ["A", "B"][i % 2]} for i, ep in enumerate(episodes(exported))]
    plain = write(tmp_path / "plain.jsonl", header, lines)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    expected, _ = score_saved_outputs(split_config(tmp_path, evaluator="plain"), plain)
    results, path = score_saved_outputs(split_config(tmp_path, evaluator="bom"), bom)
    assert validate_results(path) == [] and metric_differences(results["metrics"], expected["metrics"]) == []
    assert results["evaluator"]["models"]["saved_outputs"]["lines"] == LIMIT


def test_choice_wins_over_scores_that_contradict_it_and_these_are_counted(exported, tmp_path, capsys):
    header = json.loads((exported / "manifest.json").read_text())["predictions_header"]
    lines = [{"sample_id": ep["sample_id"], "choice": "A"} for ep in episodes(exported)]
    lines[0].update(score_a=0.1, score_b=0.9)  # contradicts
    lines[1].update(choice="TIE", score_a=0.5, score_b=0.4)  # contradicts: a tie needs equal scores
    lines[2].update(score_a=0.9, score_b=0.1)
    lines[3].update(choice="tie", score_a=0.5, score_b=0.5)
    lines[4].update(choice="INVALID", score_a=0.1, score_b=0.9, error="timeout")
    lines[5].update(choice="B", score_a=1.0, score_b=None)
    lines[6].update(score_a=0, score_b=2, extra={"note": "kept"})  # contradicts
    preds = write(tmp_path / "p.jsonl", header, lines)
    out = tmp_path / "scored"
    assert pigbench(["score", *SPLIT, "--predictions", str(preds), "--name", "judge-ext", "--output", str(out)]) == 0
    assert "3 whose totals contradict the answer" in capsys.readouterr().out
    (path,) = (out / "demo").glob("judge-ext*.json")
    assert json.loads(path.read_text())["answer_quality"]["contradicts_totals"] == 3
    rows = [json.loads(x)["prediction"] for x in path.with_name(path.stem + ".predictions.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows[:7]] == ["A", "TIE", "A", "TIE", "INVALID", "B", "A"]
    assert rows[0]["extra"] == {"contradicts_totals": True} and (rows[0]["score_a"], rows[0]["score_b"]) == (0.1, 0.9)
    assert rows[6]["extra"] == {"note": "kept", "contradicts_totals": True}
    assert not any("extra" in r for r in rows[2:6])


def _error_cases():
    """(name, edit(header, lines) -> (header, lines), expected message)."""
    def drop_header(h, lines):
        return None, lines

    def wrong_fingerprint(h, lines):
        return {**h, "fingerprint": "0123456789abcdef"}, lines

    def unknown_id(h, lines):
        return h, lines[:-1] + [{**lines[-1], "sample_id": "user9999/p000/0-1"}]

    def missing_id(h, lines):
        return h, lines[:-2]

    def duplicate_id(h, lines):
        return h, lines + [lines[3]]

    def not_json(h, lines):
        return h, lines[:5] + ['{"sample_id": "x", "score_a": 1,'] + lines[5:]

    def nested_too_deeply(h, lines):
        return h, lines[:5] + ["[" * 100000 + "]" * 100000] + lines[5:]

    def header_nested_too_deeply(h, lines):
        return "[" * 100000 + "]" * 100000, lines

    def bad_choice(h, lines):
        return h, [{"sample_id": lines[0]["sample_id"], "choice": "left"}] + lines[1:]

    def no_answer(h, lines):
        return h, [{"sample_id": lines[0]["sample_id"]}] + lines[1:]

    def unknown_field(h, lines):
        return h, [{**lines[0], "socre_a": 1.0}] + lines[1:]

    def bad_score(h, lines):
        return h, [{**lines[0], "score_a": "high"}] + lines[1:]

    def bad_rationale(h, lines):
        return h, [{**lines[0], "rationale": 5}] + lines[1:]

    def bad_dimension(h, lines):
        return h, [{**lines[0], "dimensions": [{"score_a": 1}]}] + lines[1:]

    def bad_header(h, lines):
        return {**h, "model": "x"}, lines

    def header_not_json(h, lines):
        return '{"fingerprint": ', lines

    return [
        ("no header", drop_header, "must be the header"),
        ("fingerprint", wrong_fingerprint, "made on split '0123456789abcdef'.*split_flags"),
        ("unknown id", unknown_id, "1 sample id\\(s\\) are not in the split: 'user9999/p000/0-1' \\(line 25\\)"),
        ("missing id", missing_id, "2 of 24 samples of the split have no prediction"),
        ("duplicate id", duplicate_id, "1 duplicate sample id\\(s\\): .* \\(lines 5 and 26\\)"),
        ("not json", not_json, "line 7: not JSON"),
        ("nested too deeply", nested_too_deeply, "line 7: not JSON \\(nested too deeply\\)"),
        ("header nested too deeply", header_nested_too_deeply,
         "p.jsonl: line 1 is not JSON \\(nested too deeply at column 1\\); it must be the header naming the split"),
        ("bad choice", bad_choice, "choice 'left' is not one of A, B, TIE, INVALID"),
        ("no answer", no_answer, "needs a choice, or both score_a and score_b"),
        ("unknown field", unknown_field, "unknown field\\(s\\) socre_a"),
        ("bad rationale", bad_rationale, "line 2: sample .*: rationale must be a str, not int"),
        ("bad score", bad_score, "score_a must be a number or null"),
        ("bad dimension", bad_dimension, "dimension 1 must be an object with a name"),
        ("bad header", bad_header, "unknown header field\\(s\\) model"),
        ("header not json", header_not_json,
         "p.jsonl: line 1 is not JSON \\(Expecting value at column 17\\); it must be the header naming the split"),
    ]


@pytest.mark.parametrize("name, edit, message", _error_cases(), ids=[c[0] for c in _error_cases()])
def test_score_errors_are_clear_and_write_nothing(exported, tmp_path, name, edit, message):
    header = {"fingerprint": json.loads((exported / "manifest.json").read_text())["fingerprint"]}
    h, lines = edit(header, external_colorfulness(exported))
    config = split_config(tmp_path, evaluator="broken-ext")
    with pytest.raises(SavedOutputsError, match=message):
        score_saved_outputs(config, write(tmp_path / "p.jsonl", h, lines))
    assert not (tmp_path / "results").exists()


def test_malformed_lines_are_listed_in_line_order(exported, tmp_path):
    header = {"fingerprint": json.loads((exported / "manifest.json").read_text())["fingerprint"]}
    lines = external_colorfulness(exported)
    bad = [{**line, "socre_a": 1.0} for line in lines[:11]] + ['{"sample_id": "x",'] + lines[11:]
    with pytest.raises(SavedOutputsError) as err:
        score_saved_outputs(split_config(tmp_path, evaluator="broken-ext"), write(tmp_path / "p.jsonl", header, bad))
    listed = [int(n) for n in re.findall(r"^  line (\d+):", str(err.value), re.MULTILINE)]
    assert listed == list(range(2, 12))  # the first ten; the not-JSON line 13 is among the "2 more"
    assert "12 malformed line(s)" in str(err.value) and "... and 2 more" in str(err.value)


def test_other_split_flags_are_a_fingerprint_error_from_the_cli(exported, tmp_path, capsys):
    header = {"fingerprint": json.loads((exported / "manifest.json").read_text())["fingerprint"]}
    preds = write(tmp_path / "p.jsonl", header, external_colorfulness(exported))
    flags = [*SPLIT[:-1], str(LIMIT - 1)]  # the same dataset, one target fewer
    assert pigbench(["score", *flags, "--predictions", str(preds), "--name", "x", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: the predictions were made on split" in err and "--limit 23" in err
    assert pigbench(["score", *SPLIT, "--predictions", str(tmp_path / "nope.jsonl"), "--name", "x"]) == 2
    assert "cannot read predictions file" in capsys.readouterr().err


@pytest.mark.parametrize("name, message", [("colorfulness", "is the name of a registered evaluator \\(built-in\\)"),
                                           ("../x", "must be a plain file name"), ("", "must be a plain file name")])
def test_a_name_that_is_a_registered_evaluator_or_a_path_is_refused(exported, tmp_path, capsys, name, message):
    """Saved outputs filed as 'colorfulness' would overwrite (and pass for) pigbench's own colorfulness run."""
    header = {"fingerprint": json.loads((exported / "manifest.json").read_text())["fingerprint"]}
    preds = write(tmp_path / "p.jsonl", header, external_colorfulness(exported))
    assert pigbench(["score", *SPLIT, "--predictions", str(preds), "--name", name, "--output", str(tmp_path / "r")]) == 2
    assert re.search(f"error: --name .* {message}", capsys.readouterr().err) and not (tmp_path / "r").exists()


def test_an_image_that_reads_but_does_not_decode_is_exported_as_unreadable(tmp_path):
    """A truncated JPEG, an empty file or text named .jpg read fine as bytes, so they were exported as
    image files (empty and text ones as .bin) with no error, while a pigbench run makes every episode
    showing them INVALID: an outside model could score what pigbench cannot."""
    import io

    from pigbench.export_episodes import _episode_json
    from pigbench.protocol import Episode, ImageRef, Label, Target

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buf, format="JPEG")
    folder = tmp_path / "src"
    folder.mkdir()
    files = {"trunc.jpg": buf.getvalue()[: len(buf.getvalue()) // 2], "empty.jpg": b"", "text.jpg": b"not an image",
             "good.jpg": buf.getvalue()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    refs = {name: ImageRef(name, folder / name) for name in files}
    (tmp_path / "out" / "images").mkdir(parents=True)
    written, unreadable = {}, {}
    for bad in ("trunc.jpg", "empty.jpg", "text.jpg"):
        line = _episode_json(Episode("u", (), Target(bad, "p", refs[bad], refs["good.jpg"], Label.A)),
                             tmp_path / "out", written, unreadable)
        assert line["target"]["image_a"]["file"] is None and f"image {bad!r}: cannot decode" in line["target"]["image_a"]["error"]
        assert (tmp_path / "out" / line["target"]["image_b"]["file"]).read_bytes() == files["good.jpg"]
    assert set(unreadable) == {"trunc.jpg", "empty.jpg", "text.jpg"} and len(written) == 1


@pytest.mark.parametrize("known_hash", [None, "h-known"])
def test_an_exported_image_is_read_once(tmp_path, known_hash):
    """Its bytes used to be read three times (content hash, decode check, the file's copy)."""
    import io

    from pigbench.export_episodes import _write_image
    from pigbench.protocol import ImageRef

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, format="PNG")
    reads = []
    ref = ImageRef("x", lambda: reads.append(1) or buf.getvalue(), known_hash=known_hash)
    (tmp_path / "images").mkdir()
    rel = _write_image(ref, tmp_path, {})
    assert len(reads) == 1 and (tmp_path / rel).read_bytes() == buf.getvalue() and rel.endswith(".png")
    assert ref.content_hash == (known_hash or hashlib.sha256(buf.getvalue()).hexdigest())


def test_an_unreadable_image_is_exported_with_its_error_not_fatal(tmp_path, capsys):
    from pigbench.export_episodes import export_episodes

    config = RunConfig(dataset="toy", dataset_options={"broken_every": "10"}, output=str(tmp_path / "r"), progress=False)
    manifest = export_episodes(config, tmp_path / "out")
    entries = [img for ep in episodes(tmp_path / "out")
               for img in (ep["target"]["image_a"], ep["target"]["image_b"],
                           *(r[side] for r in ep["references"] for side in ("preferred", "rejected")))]
    broken = [img for img in entries if int(img["id"][4:]) % 10 == 0]
    assert broken and all(img["file"] is None and "truncated file" in img["error"] for img in broken)
    assert all((tmp_path / "out" / img["file"]).is_file() for img in entries if img not in broken)
    assert manifest["unreadable_images"] == len({img["id"] for img in broken}) and manifest["images"] > 0
    assert pigbench(["export-episodes", "--dataset", "toy", "--dataset-option", "broken_every=2", "--out", str(tmp_path / "none")]) == 2
    assert "no image of the split can be read" in capsys.readouterr().err
    assert not any((tmp_path / "none").glob("episodes.jsonl*"))  # no episodes file, no temporary one



def test_split_flags_name_a_relative_dataset_path_absolutely(tmp_path, monkeypatch):
    """The manifest's score_command must work from another directory than export-episodes ran in."""
    from pigbench.export_episodes import split_flags
    from pigbench.runner import RunConfig

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    flags = split_flags(RunConfig(dataset="pigbench", dataset_path="data"))
    assert flags[flags.index("--dataset-path") + 1] == str(tmp_path.resolve() / "data")
    flags = split_flags(RunConfig(dataset="pigbench", dataset_path="not-here"))
    assert flags[flags.index("--dataset-path") + 1] == "not-here"


def test_an_export_into_an_earlier_exports_folder_removes_the_images_it_no_longer_shows(tmp_path, capsys):
    """A 24-target export into the folder of an earlier one left the earlier images behind, so the folder held
    images its episodes.jsonl does not name; files the export did not write stay."""
    out = tmp_path / "out"
    assert pigbench(["export-episodes", *SPLIT, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    (out / "images" / "mine.png").write_bytes(b"mine")
    (out / "images" / f"{'b' * 32}.png").write_bytes(b"md5")  # not a SHA-256 name: left alone, as the docs say
    (out / "images" / f"{'a' * 64}.png.tmp").write_bytes(b"cut")  # left by an interrupted export
    before = {p.name for p in (out / "images").iterdir()}
    capsys.readouterr()
    assert pigbench(["export-episodes", *SPLIT[:-1], "2", "--out", str(out)]) == 0
    shown = {img["file"] for ep in episodes(out)
             for img in (ep["target"]["image_a"], ep["target"]["image_b"],
                         *(r[side] for r in ep["references"] for side in ("preferred", "rejected")))}
    assert {f"images/{p.name}" for p in (out / "images").iterdir()} == shown | {"images/mine.png", f"images/{'b' * 32}.png"}
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "manifest.json").read_text())["images"] == len(shown)
    assert f"removed {len(before) - 2 - len(shown)} images of an earlier export" in capsys.readouterr().err


def test_split_flags_name_a_relative_path_option_absolutely_and_score_runs_elsewhere(tmp_path, monkeypatch, capsys):
    """PIP's images=DIR (Pick-a-Pic's images_path, images_cache) stayed relative in split_flags and
    score_command, so the command export-episodes printed failed from another directory."""
    from test_adapter_pip import build

    from pigbench.export_episodes import split_flags

    build(tmp_path / "pip")
    monkeypatch.chdir(tmp_path)
    assert pigbench(["export-episodes", "--dataset", "pip", "--dataset-path", "pip", "--dataset-option",
                     "images=pip/regenerated", "--out", "out"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert f"images={(tmp_path / 'pip' / 'regenerated').resolve()}" in manifest["split_flags"]
    preds = write(tmp_path / "p.jsonl", manifest["predictions_header"],
                  [{"sample_id": ep["sample_id"], "score_a": 1.0, "score_b": 0.0} for ep in episodes(tmp_path / "out")])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert pigbench(["score", *manifest["split_flags"], "--predictions", str(preds), "--name", "outside",
                     "--output", "r"]) == 0, capsys.readouterr().err
    (tmp_path / "elsewhere" / "none").mkdir()  # 'none' (no image store) stays the word, not a folder
    flags = split_flags(RunConfig(dataset="pickapic", dataset_options={"images_cache": "none", "images_path": "none"}))
    assert "images_cache=none" in flags and "images_path=none" in flags
    (tmp_path / "elsewhere" / "train").mkdir()  # an option that names no path stays as given
    assert "split=train" in split_flags(RunConfig(dataset="pickapic", dataset_options={"split": "train"}))
