"""`pigbench build render` with a tiny random-weight SDXL pipeline built from configs (CPU, no download)."""

import json

import numpy as np
import pytest
from PIL import Image

from build_fixtures import ColorPipeline, good_reply, one_torch_thread, select, tiny_sdxl_dir
from pigbench.build import render
from pigbench.build.render import image_seed
from pigbench.build.workspace import append_jsonl, read_jsonl
from pigbench.cli import main as cli
from pigbench.runner import check_device

pytestmark = pytest.mark.models
pytest.importorskip("torch")
pytest.importorskip("diffusers")



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


RENDER = ["--device", "cpu", "--steps", "2", "--width", "32", "--height", "32", "--guidance", "5"]


def expanded(root, count):
    ws = select(root, count)
    for p in read_jsonl(ws.prompts):
        append_jsonl(ws.variants, {"set_id": p["set_id"], "base_prompt": p["base_prompt"], "attempts": 1,
                                   "variants": json.loads(good_reply(p["base_prompt"]))["variants"], "expander": {}})
    return ws


def pixels(ws, record):
    return np.asarray(Image.open(ws.root / record["path"]), dtype=np.int16)


def test_render_is_resumable_and_records_every_image(tmp_path, capsys):
    model = str(tiny_sdxl_dir())
    ws = expanded(tmp_path / "ws", 2)
    args = ["build", "--workdir", str(ws.root), "render", "--model", model, *RENDER, "--batch-size", "3"]
    assert cli(args + ["--limit", "5"]) == 0
    first = read_jsonl(ws.renders)
    assert len(first) == 5 and [r["batch_size"] for r in first] == [3, 3, 3, 2, 2]
    assert cli(args) == 0
    records = read_jsonl(ws.renders)
    assert len(records) == 8 and records[:5] == first  # the first five were not rendered again
    for r in records:
        image = Image.open(ws.root / r["path"])
        assert image.size == (32, 32)
        assert r["path"] == f"images/{r['set_id']}/{r['index']}.png"
        assert r["seed"] == image_seed(0, r["set_id"], r["index"])
        assert (r["model"], r["steps"], r["guidance"], r["dtype"]) == (model, 2, 5.0, "float32")
        assert r["scheduler_class"] == "EulerDiscreteScheduler" and r["scheduler"] is None
    assert len({r["seed"] for r in records}) == 8
    assert cli(args) == 0 and "nothing to render" in capsys.readouterr().out
    assert cli(args[:-1] + ["4", "--steps", "3"]) == 2  # other settings: refused, not mixed
    assert "not {" in capsys.readouterr().err


def test_an_image_depends_on_its_seed_not_on_its_batch(tmp_path):
    model = str(tiny_sdxl_dir())
    a, b = expanded(tmp_path / "a", 1), expanded(tmp_path / "b", 1)
    assert cli(["build", "--workdir", str(a.root), "render", "--model", model, *RENDER, "--batch-size", "4"]) == 0
    assert cli(["build", "--workdir", str(b.root), "render", "--model", model, *RENDER, "--batch-size", "1"]) == 0
    ra, rb = read_jsonl(a.renders), read_jsonl(b.renders)
    for x, y in zip(ra, rb):
        assert x["seed"] == y["seed"]
        assert np.abs(pixels(a, x) - pixels(b, y)).max() <= 1
    assert np.abs(pixels(a, ra[0]) - pixels(a, ra[1])).max() > 1  # different seeds and prompts differ


def test_scheduler_choice_is_applied_and_recorded(tmp_path, capsys):
    ws = expanded(tmp_path / "ws", 1)
    base = ["build", "--workdir", str(ws.root), "render", "--model", str(tiny_sdxl_dir()), *RENDER, "--limit", "1"]
    assert cli(base + ["--scheduler", "DPMSolverMultistepScheduler"]) == 0
    record, = read_jsonl(ws.renders)
    assert record["scheduler"] == record["scheduler_class"] == "DPMSolverMultistepScheduler"
    assert cli(base + ["--scheduler", "os.system", "--steps", "9"]) == 2
    assert "not a diffusers scheduler" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--limit", "-1"), ("--limit", "0"), ("--batch-size", "0"),
                                         ("--batch-size", "-2"), ("--steps", "0"), ("--width", "-32")])
def test_a_count_below_one_is_refused_before_the_pipeline_loads(tmp_path, monkeypatch, capsys, flag, value):
    """--limit -1 used to render all but one pending image, --batch-size -2 none (exit 0), and
    --batch-size 0 failed in range() once the pipeline had loaded."""
    ws = expanded(tmp_path / "ws", 1)
    monkeypatch.setattr(render, "load_pipeline", lambda *a: pytest.fail("the pipeline must not load"))
    args = ["build", "--workdir", str(ws.root), "render", "--model", "unused", *RENDER, flag, value]
    assert cli(args) == 2
    assert capsys.readouterr().err == f"error: {flag} must be at least 1, got {value}\n"
    assert not ws.renders.exists()


def test_missing_model_names_the_flag_and_the_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ws = expanded(tmp_path / "ws", 1)
    assert cli(["build", "--workdir", str(ws.root), "render", "--model", "no-such-org/no-such-sdxl", *RENDER]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "PIGBENCH_SDXL_MODEL" in err and "stable-diffusion-xl-base-1.0" in err


def test_absent_device_is_refused_before_the_pipeline_loads(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(render, "load_pipeline", lambda *a: pytest.fail("loaded the pipeline"))
    ws = expanded(tmp_path / "ws", 1)
    base = ["build", "--workdir", str(ws.root), "render", "--model", "no-such/sdxl", "--steps", "2"]
    for device in ("cuda", "cuda:1", "banana"):
        with pytest.raises(ValueError) as refused:
            check_device(device)
        assert cli(base + ["--device", device]) == 2
        assert capsys.readouterr().err == f"error: {refused.value}\n"  # the message `pigbench run` gives
    assert not ws.renders.exists()


def test_an_image_that_does_not_match_its_record_is_rendered_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(render, "load_pipeline", lambda *a: ColorPipeline())
    ws = expanded(tmp_path / "ws", 1)
    args = ["build", "--workdir", str(ws.root), "render", *RENDER]
    assert cli(args) == 0
    first = read_jsonl(ws.renders)
    damaged, missing = ws.root / first[1]["path"], ws.root / first[3]["path"]
    damaged.write_bytes(damaged.read_bytes()[:50])
    missing.unlink()
    capsys.readouterr()
    assert cli(args) == 0
    err = capsys.readouterr().err
    assert "rendering 2 recorded image(s) again" in err and first[1]["path"] in err and first[3]["path"] in err
    records = read_jsonl(ws.renders)
    assert records[:4] == first and [(r["index"], r["sha256"]) for r in records[4:]] == [
        (1, first[1]["sha256"]), (3, first[3]["sha256"])]  # the same seed gives the same image
    assert cli(args) == 0 and "nothing to render" in capsys.readouterr().out  # both files now match


def test_resuming_with_another_base_seed_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(render, "load_pipeline", lambda *a: ColorPipeline())
    ws = expanded(tmp_path / "ws", 1)
    args = ["build", "--workdir", str(ws.root), "render", *RENDER]
    assert cli(args + ["--limit", "2"]) == 0
    first = read_jsonl(ws.renders)
    capsys.readouterr()
    assert cli(args + ["--seed", "1"]) == 2  # images 2 and 3 would get seeds of another base seed
    assert "another base --seed than 1" in capsys.readouterr().err
    assert read_jsonl(ws.renders) == first
    assert cli(args) == 0 and len(read_jsonl(ws.renders)) == 4
