"""tools/parity.py's own logic: which pairs it compares and when it calls a comparison passed.

The comparison itself needs the reference packages in environments of their own (docs/parity.md);
these tests cover what runs in pigbench's environment.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from fixtures_adapters import SAMPLE_IMG

TOOL = Path(__file__).resolve().parents[1] / "tools" / "parity.py"
SAMPLE = SAMPLE_IMG.parent


@pytest.fixture(scope="module")
def parity():
    spec = importlib.util.spec_from_file_location("parity_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="needs ../shared/data/llava_reward_sample_test")
def test_sample_jobs_are_the_samples_pairs_with_their_prompts(parity):
    jobs = parity.sample_jobs(SAMPLE)
    assert len(jobs) == 6  # 4 pairwise records + 4 single records taken two by two
    assert jobs[0]["prompt"].startswith("perfect white haired egyptian goddess")
    assert Path(jobs[0]["image_a"]).name == "0_1_id_000904-0035.jpg"
    assert (Path(jobs[4]["image_a"]).name, Path(jobs[4]["image_b"]).name) == ("0_c.jpg", "0_r.jpg")
    assert jobs[5]["prompt"].startswith("A close-up photograph of a fat orange cat")
    assert all(Path(job[side]).is_file() for job in jobs for side in parity.SIDES)


def test_jobs_file_paths_are_relative_to_the_file(parity, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "jobs.json").write_text(json.dumps([{"prompt": "p", "image_a": "img/a.png", "image_b": "b.png"}]))
    (job,) = parity.file_jobs(tmp_path / "jobs.json")
    assert (job["image_a"], job["image_b"]) == (str(tmp_path / "img" / "a.png"), str(tmp_path / "b.png"))


def test_each_pair_is_scored_again_at_odd_sizes(parity, tmp_path):
    Image.new("RGB", (512, 640), "red").save(tmp_path / "a.jpg")
    Image.new("P", (200, 100)).save(tmp_path / "b.png")  # smaller than the cut: enlarged first
    jobs = [{"prompt": "p", "image_a": str(tmp_path / "a.jpg"), "image_b": str(tmp_path / "b.png")}]
    out = parity.with_odd_sizes(jobs, tmp_path)
    assert out[0] == jobs[0] and out[1]["prompt"] == "p"
    with Image.open(out[1]["image_a"]) as a, Image.open(out[1]["image_b"]) as b:
        assert (a.size, b.size, b.mode) == ((517, 389), (301, 703), "RGB")


PAIRS = [{"prompt": "p", "image_a": f"{i}a.png", "image_b": f"{i}b.png"} for i in range(2)]
THEIRS = [[1.0, 2.0], [3.0, 0.5]]


@pytest.mark.parametrize("ours, passed", [
    ([[1.00005, 2.0], [3.0, 0.5]], True),
    ([[1.0, 2.0], [3.0, 0.5002]], False),  # one score off by 2e-4
])
def test_compare_fails_on_a_score_beyond_the_tolerance(parity, ours, passed, capsys):
    assert parity.compare(PAIRS, ours, THEIRS, tolerance=1e-4) is passed
    assert "max |diff| " + ("5.00e-05" if passed else "2.00e-04") in capsys.readouterr().out


def test_compare_fails_when_the_scores_barely_differ(parity, capsys):
    flat = [[1.0, 1.0], [1.0, 1.00001]]
    assert parity.compare(PAIRS, flat, flat, tolerance=1e-4) is False
    assert "agreement shows nothing" in capsys.readouterr().out


def test_fake_bert_tokenizer_covers_the_prompts(parity, tmp_path):
    AutoTokenizer = pytest.importorskip("transformers").AutoTokenizer

    prompts = ["A close-up photograph of a fat orange cat. Shot on Leica M6.", "ultra-realistic, 4 k"]
    snapshot = parity.fake_hub_entry(tmp_path, "bert-base-uncased")
    parity.fake_bert_tokenizer(snapshot, prompts)
    assert (tmp_path / "hf" / "hub" / "models--bert-base-uncased" / "refs" / "main").read_text() == parity.FAKE_REVISION
    tok = AutoTokenizer.from_pretrained(snapshot)
    ids = tok(prompts)["input_ids"]
    assert tok.unk_token_id not in {i for seq in ids for i in seq}
    assert tok.decode(ids[0], skip_special_tokens=True) == "a close - up photograph of a fat orange cat. shot on leica m6."


@pytest.mark.parametrize("extra, message", [
    (["--jobs", "missing.json"], "--jobs: cannot read {tmp}/missing.json as JSON: "),
    (["--jobs", "."], "--jobs: cannot read {tmp} as JSON: "),
    (["--sample", "missing"], "--sample: cannot read {tmp}/missing/pairwise_sample.json as JSON: "),
    (["--jobs", "jobs.json", "--tolerance", "-1"], "--tolerance must be >= 0, got -1.0"),
])
def test_bad_inputs_are_one_line_errors(parity, tmp_path, monkeypatch, capsys, extra, message):
    """These used to end in tracebacks (or, for a negative tolerance, in a failed comparison)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        parity.main(["imagereward", "--reference-python", sys.executable, "--model-path", "unused",
                     *[str(tmp_path / a) if a in ("missing.json", ".", "missing") else a for a in extra]])
    text = str(stop.value.code) + capsys.readouterr().err
    assert message.format(tmp=tmp_path) in text and "Traceback" not in text


def test_a_reference_python_that_is_not_there_is_named(parity, tmp_path, capsys):
    with pytest.raises(SystemExit):
        parity.main(["imagereward", "--reference-python", str(tmp_path / "py"), "--model-path", "x",
                     "--jobs", "jobs.json"])
    assert f"--reference-python {tmp_path / 'py'} is not an executable" in capsys.readouterr().err
