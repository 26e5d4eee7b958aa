"""hps-v2 / hps-v2.1 on a tiny open_clip model registered as a custom config, against hpsv2's img_score recipe."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

import torchvision.transforms.functional as F
from torchvision import transforms as T

from pigbench.evaluator import Runtime
from pigbench.evaluators._weights import CheckpointError
from pigbench.registry import evaluators
from scalar_fixtures import run_predict, standard_episodes, write_images

pytestmark = pytest.mark.models

ARCH = "pigbench-tiny-hps"
# OpenAI CLIP's normalization, as published (openai/CLIP clip.py, open_clip constants): spelled out here
# so that a wrong constant in pigbench cannot agree with itself.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def hps_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hps")
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (root / f"{ARCH}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / f"{ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    (root / "ckpt").mkdir()
    torch.save({"state_dict": model.state_dict()}, root / "ckpt" / "HPS_v2.1_compressed.pt")
    return root, model.state_dict(), write_images(root / "images")


@pytest.fixture(scope="module")
def reference_model(hps_setup):
    model = open_clip.create_model(ARCH, pretrained=None, output_dict=True)
    model.load_state_dict(hps_setup[1])  # strict, as hpsv2 loads checkpoint["state_dict"]
    model.tokenizer = open_clip.get_tokenizer(ARCH)
    return model.eval()


def _hpsv2_reference(model, image, prompt):
    """hpsv2.img_score.score: val transform (ToTensor, ResizeMaxSize(fill=0), Normalize), cosine of features."""
    x = T.ToTensor()(image.convert("RGB"))
    h, w = x.shape[1:]
    scale = 32 / float(max(h, w))
    nh, nw = round(h * scale), round(w * scale)
    x = F.resize(x, [nh, nw], T.InterpolationMode.BICUBIC, antialias=True)
    x = F.pad(x, [(32 - nw) // 2, (32 - nh) // 2, 32 - nw - (32 - nw) // 2, 32 - nh - (32 - nh) // 2], fill=0)
    x = T.Normalize(CLIP_MEAN, CLIP_STD)(x)[None]
    text = model.tokenizer([prompt])
    with torch.no_grad():
        out = model(x, text)
    return torch.diagonal(out["image_features"] @ out["text_features"].T).item()


def test_hps_v21_matches_hpsv2_img_score(hps_setup, reference_model):
    root, state, images = hps_setup
    cls = evaluators.get("hps-v2.1")
    ev = cls(cls.Config(model_path=str(root / "ckpt"), architecture=ARCH), Runtime(batch_size=3))
    eps = standard_episodes(images)
    for ep, (sa, sb) in zip(eps, run_predict(ev, eps)):
        assert sa == pytest.approx(_hpsv2_reference(reference_model, ep.target.image_a.open(), ep.target.prompt), abs=1e-4)
        assert sb == pytest.approx(_hpsv2_reference(reference_model, ep.target.image_b.open(), ep.target.prompt), abs=1e-4)
        assert -1.0 <= sa <= 1.0
    assert ev.provenance()["checkpoint_sha256"].startswith("sha256:")
    assert ev.calibration_scale == pytest.approx(float(state["logit_scale"].exp()))  # HPS scores are raw cosines


@pytest.mark.parametrize("antialias", [True, False])
def test_hps_antialias_option_reaches_the_resize(hps_setup, antialias):
    root, _, images = hps_setup
    cls = evaluators.get("hps-v2.1")
    ev = cls(cls.Config(model_path=str(root / "ckpt"), architecture=ARCH, antialias=antialias), Runtime(batch_size=3))
    ev.setup()
    image = images[0].open()  # 45 x 37: downscaled to 32 x 26, where antialiasing changes pixels
    x = F.resize(T.ToTensor()(image), [26, 32], T.InterpolationMode.BICUBIC, antialias=antialias)
    assert ev.images.transform.antialias is antialias and torch.equal(ev.images.transform(image)[:, 3:29], x)


def test_hps_v2_reads_its_own_file_name_and_env_var(hps_setup, reference_model, monkeypatch):
    root, state, images = hps_setup
    torch.save({"state_dict": state}, root / "HPS_v2_compressed.pt")
    monkeypatch.setenv("PIGBENCH_HPSV2_PATH", str(root))
    cls = evaluators.get("hps-v2")
    ev = cls(cls.Config(architecture=ARCH))
    ev.check_requirements(ev.config)
    (sa, sb), = run_predict(ev, standard_episodes(images)[:1])
    assert sa == pytest.approx(_hpsv2_reference(reference_model, images[0].open(), standard_episodes(images)[0].target.prompt), abs=1e-4)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("logit_scale"), r"1 missing key\(s\) \['logit_scale'\]"),
    (lambda sd: sd.__setitem__("score_predictor.weight", torch.zeros(1)), r"1 unexpected key\(s\)"),
])
def test_hps_loading_is_strict(hps_setup, tmp_path, edit, message):
    _, state, _ = hps_setup
    sd = dict(state)
    edit(sd)
    torch.save({"state_dict": sd}, tmp_path / "HPS_v2.1_compressed.pt")
    cls = evaluators.get("hps-v2.1")
    with pytest.raises(CheckpointError, match=message):
        cls(cls.Config(model_path=str(tmp_path), architecture=ARCH)).setup()


def test_hps_damaged_checkpoint_fails_before_the_model_is_built(hps_setup, tmp_path, monkeypatch):
    """A zero-byte checkpoint is reported at once, not after building ViT-H-14 (a minute on a CPU)."""
    (tmp_path / "HPS_v2.1_compressed.pt").write_bytes(b"")
    built = []
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: built.append(a))
    cls = evaluators.get("hps-v2.1")
    with pytest.raises(CheckpointError, match="could not be read"):
        cls(cls.Config(model_path=str(tmp_path), architecture=ARCH)).setup()
    assert built == []


def test_an_architecture_open_clip_does_not_know_is_refused_with_the_requirements(tmp_path):
    """architecture=ViT-X passed the checks and open_clip's RuntimeError ended the run in a traceback."""
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "HPS_v2_compressed.pt")
    cls = evaluators.get("hps-v2")
    with pytest.raises(ValueError, match="^hps-v2: option architecture='ViT-X' is not an open_clip model name "):
        cls.check_requirements(cls.Config(model_path=str(tmp_path), architecture="ViT-X"))
    cls.check_requirements(cls.Config(model_path=str(tmp_path)))
