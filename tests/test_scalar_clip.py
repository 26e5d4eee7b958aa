"""clipscore, pickscore and aesthetics on tiny random CLIPs, against their published recipes.

Each reference below is rebuilt from the original code's documented steps (preprocessing,
features, formula) with different code paths from the evaluators: torchvision or HF PIL
processors, the vision/text towers called directly, padding to 77, and numpy normalization.
"""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import numpy as np
from torchvision import transforms as T

from pigbench.evaluator import RequirementError, Runtime
from pigbench.protocol import Label
from pigbench.registry import evaluators
from scalar_fixtures import (PROMPTS, clip_image_processor, clip_tokenizer, requests_scored, run_predict, standard_episodes,
                             tiny_clip_dir, write_images)

pytestmark = pytest.mark.models
# OpenAI CLIP's normalization, as published (openai/CLIP clip.py): spelled out here so that a wrong
# constant in pigbench cannot agree with itself.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def clip_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    model = tiny_clip_dir(root / "clip")
    return root, model, write_images(root / "images")


@pytest.fixture(scope="module")
def flipped_clip(clip_setup):
    """The tiny CLIP with its text projection negated, so every text-image cosine changes sign: the
    tiny CLIP's cosines with these prompts are all negative (clipscore 0), the flipped one's positive."""
    import copy

    root, model, _ = clip_setup
    flipped = copy.deepcopy(model)
    with torch.no_grad():
        flipped.text_projection.weight.neg_()
    flipped.save_pretrained(root / "clip-flipped")
    clip_tokenizer(root / "clip-flipped")
    clip_image_processor(root / "clip-flipped")
    return root / "clip-flipped", flipped


def _openai_clip_pixels(img, size=32):  # clip.load(...)[1]: Resize(bicubic) + CenterCrop + ToTensor + Normalize
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                    T.ToTensor(), T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])
    return tf(img.convert("RGB"))[None]


def _image_embedding(model, pixels):
    with torch.no_grad():
        pooled = model.vision_model(pixel_values=pixels).pooler_output
        return model.visual_projection(pooled)


def _text_embedding(model, tokenizer, text):
    ids = tokenizer([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        pooled = model.text_model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).pooler_output
        return model.text_projection(pooled)


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b).item()


def test_clipscore_matches_hessel_recipe(clip_setup, flipped_clip):
    from transformers import AutoTokenizer

    root, model, images = clip_setup
    tok = AutoTokenizer.from_pretrained(root / "clip")
    cls = evaluators.get("clipscore")
    eps = standard_episodes(images)
    expected = []
    for path, clip in ((root / "clip", model), flipped_clip):
        ev = cls(cls.Config(model_path=str(path)), Runtime(batch_size=3))
        scores = run_predict(ev, eps)
        for ep, (sa, sb) in zip(eps, scores):
            for img, s in ((ep.target.image_a, sa), (ep.target.image_b, sb)):
                cos = _cos(_image_embedding(clip, _openai_clip_pixels(img.open())),
                           _text_embedding(clip, tok, "A photo depicts " + ep.target.prompt))
                expected.append(2.5 * max(cos, 0.0))
                assert s == pytest.approx(expected[-1], abs=1e-4)
        assert all(0.0 <= s <= 2.5 for pair in scores for s in pair)
    assert min(expected) == 0.0 and sum(e > 0.05 for e in expected) >= 8  # both the clamp and the formula are read


def test_clipscore_cleans_the_caption_as_openai_clip_tokenizer_does(clip_setup):
    """clip.tokenize fixes the text with ftfy and unescapes HTML before BPE: a curly apostrophe, an
    entity, full-width letters and outer spaces encode as their plain forms."""
    from transformers import AutoTokenizer

    root, model, images = clip_setup
    tok = AutoTokenizer.from_pretrained(root / "clip")
    cls = evaluators.get("clipscore")
    ev = cls(cls.Config(model_path=str(root / "clip")))
    ev.setup()
    clean = _text_embedding(model, tok, "A photo depicts a dog's face 'red'")[0]
    assert ev.texts.get("  a dog’s face &amp;#39;ｒｅｄ&#39; ").tolist() == pytest.approx(clean.tolist(), abs=1e-5)


@pytest.mark.parametrize("name, weight", [("clipscore", 2.5), ("clip-i", 1.0), ("text-align", 1.0)])
def test_calibration_reads_cosine_scores_at_the_models_logit_scale(clip_setup, name, weight):
    """Pick-a-Pic's softmax grid needs logits: CLIP's are exp(logit_scale) * cos (clipscore's scores are 2.5 * cos)."""
    root, model, _ = clip_setup
    cls = evaluators.get(name)
    ev = cls(cls.Config(model_path=str(root / "clip")))
    ev.setup()
    assert ev.calibration_scale == pytest.approx(float(model.logit_scale.exp()) / weight) and ev.calibration_scale != 1.0


@pytest.mark.parametrize("name", ["clipscore", "clip-i"])
def test_a_processor_that_resizes_otherwise_than_bicubic_is_refused(tmp_path, name):
    """The transform resizes bicubically; a processor declaring bilinear must not be run bicubically in silence."""
    tiny_clip_dir(tmp_path / "clip")
    config = json.loads((tmp_path / "clip" / "preprocessor_config.json").read_text())
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps({**config, "resample": 2}))
    cls = evaluators.get(name)
    with pytest.raises(ValueError, match=r"only bicubic resizing is supported.*resample=2"):
        cls(cls.Config(model_path=str(tmp_path / "clip"))).setup()


@pytest.mark.parametrize("edit, declared", [({"do_normalize": False}, "do_normalize=False"),
                                           ({"do_rescale": False, "do_resize": False}, "do_resize=False, do_rescale=False"),
                                           ({"rescale_factor": 1.0}, "rescale_factor=1.0")])
def test_a_processor_that_skips_a_step_the_transform_always_does_is_refused(tmp_path, edit, declared):
    tiny_clip_dir(tmp_path / "clip")
    config = json.loads((tmp_path / "clip" / "preprocessor_config.json").read_text())
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps({**config, **edit}))
    cls = evaluators.get("clipscore")
    with pytest.raises(ValueError, match=rf"rescale by 1/255 and normalize are supported, the image processor declares {declared}$"):
        cls(cls.Config(model_path=str(tmp_path / "clip"))).setup()


def test_clipscore_formula_weight_clamp_and_prefix(clip_setup, flipped_clip):
    root, _, images = clip_setup
    cls = evaluators.get("clipscore")
    eps = standard_episodes(images)
    path = str(flipped_clip[0])  # positive cosines: the weight scales something
    raw = cls(cls.Config(model_path=path, weight=1.0, prefix=""))
    raw.setup()
    cos = [float(torch.nn.functional.cosine_similarity(raw.images.get(ep.target.image_a).float(),
                                                      raw.texts.get(ep.target.prompt).float(), dim=0)) for ep in eps]
    no_prefix = [a for a, _ in run_predict(raw, eps)]
    assert no_prefix == pytest.approx([max(c, 0.0) for c in cos], abs=1e-5) and min(no_prefix) > 0.05
    weighted = [a for a, _ in run_predict(cls(cls.Config(model_path=path, weight=3.0, prefix="")), eps)]
    assert weighted == pytest.approx([3.0 * s for s in no_prefix], abs=1e-5)
    assert raw.texts.encoded_texts == len(set(PROMPTS[:3]))


@pytest.mark.parametrize("name", ["clipscore", "clip-i", "text-align"])
def test_an_unknown_dtype_is_refused_with_the_requirements(clip_setup, name):
    """It was refused only by setup(), after the run had read the whole dataset."""
    root, _, _ = clip_setup
    cls = evaluators.get(name)
    with pytest.raises(ValueError, match=f"^{name}: option dtype must be auto or one of float32, float16, bfloat16, got 'float17'$"):
        cls.check_requirements(cls.Config(model_path=str(root / "clip"), dtype="float17"))
    cls.check_requirements(cls.Config(model_path=str(root / "clip"), dtype="bfloat16"))


@pytest.mark.parametrize("raw", ["0", "-2.5", "nan", "inf"])
def test_clipscore_refuses_a_weight_that_is_not_a_finite_positive_number(raw):
    """weight=-1 flipped every choice and weight=0 made every pair a tie, silently; nan made every
    prediction INVALID after the model had loaded."""
    cls = evaluators.get("clipscore")
    with pytest.raises(ValueError, match=f"^clipscore: option weight must be a finite number > 0, got {float(raw)!r}$"):
        cls.Config.from_options({"weight": raw})


def test_pickscore_matches_readme_recipe(clip_setup):
    from transformers import AutoTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    root, model, images = clip_setup
    processor = CLIPImageProcessorPil.from_pretrained(root / "clip")
    tok = AutoTokenizer.from_pretrained(root / "clip")
    cls = evaluators.get("pickscore")
    ev = cls(cls.Config(model_path=str(root / "clip"), processor_path=str(root / "clip")), Runtime(batch_size=4))
    eps = standard_episodes(images)
    for ep, (sa, sb) in zip(eps, run_predict(ev, eps)):
        pixels = processor([ep.target.image_a.open(), ep.target.image_b.open()], return_tensors="pt")["pixel_values"]
        inputs = tok(ep.target.prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            img = model.get_image_features(pixel_values=torch.as_tensor(pixels))
            txt = model.get_text_features(**inputs)
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        expected = (model.logit_scale.exp() * (txt @ img.T))[0]
        assert [sa, sb] == pytest.approx(expected.tolist(), abs=1e-4)
        probs = torch.softmax(expected, dim=-1)
        label = ev.predict([ep.without_gold()])[0].label
        assert label == (Label.A if probs[0] > probs[1] else Label.B)


def test_pickscore_embeds_each_image_and_prompt_once(clip_setup):
    root, _, images = clip_setup
    cls = evaluators.get("pickscore")
    ev = cls(cls.Config(model_path=str(root / "clip"), processor_path=str(root / "clip")), Runtime(batch_size=2))
    eps = standard_episodes(images, with_refs=True)  # references are ignored by a reference-free scorer
    scored = requests_scored(ev)
    run_predict(ev, eps)
    run_predict(ev, eps[::-1])
    targets = {img.content_hash for ep in eps for img in (ep.target.image_a, ep.target.image_b)}
    assert ev.images.encoded_images == len(targets) == 5
    assert ev.images.encoder_calls == 3 and ev.texts.encoded_texts == 3
    assert len(scored) == 7  # distinct (image, prompt) requests
    prov = ev.provenance()
    assert prov["dtype"] == "float32" and prov["revision"].startswith("sha256-dir:")


def _aesthetic_head(path):
    import torch.nn as nn

    from pigbench.evaluators._rating_head import RatingHead

    torch.manual_seed(3)
    head = RatingHead(16)
    for p in head.parameters():
        nn.init.normal_(p, std=0.3)
    torch.save(head.state_dict(), path)
    return {k: v.double().numpy() for k, v in head.state_dict().items()}


def test_aesthetics_matches_simple_inference_recipe(clip_setup):
    root, model, images = clip_setup
    weights = _aesthetic_head(root / "head.pth")
    cls = evaluators.get("aesthetics")
    ev = cls(cls.Config(model_path=str(root / "head.pth"), clip_path=str(root / "clip")))
    eps = standard_episodes(images)
    for ep, (sa, sb) in zip(eps, run_predict(ev, eps)):
        for img, s in ((ep.target.image_a, sa), (ep.target.image_b, sb)):
            emb = _image_embedding(model, _openai_clip_pixels(img.open())).double().numpy()
            x = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
            for i in (0, 2, 4, 6, 7):  # five linear layers, no activations
                x = x @ weights[f"layers.{i}.weight"].T + weights[f"layers.{i}.bias"]
            assert s == pytest.approx(float(x[0, 0]), abs=1e-4)
    assert ev.uses_prompt is False


def test_aesthetics_ignores_the_prompt_when_memoizing(clip_setup):
    root, _, images = clip_setup
    _aesthetic_head(root / "head2.pth")
    cls = evaluators.get("aesthetics")
    ev = cls(cls.Config(model_path=str(root / "head2.pth"), clip_path=str(root / "clip")))
    eps = standard_episodes(images)
    scored = requests_scored(ev)
    run_predict(ev, eps)
    assert len(scored) == len({img.content_hash for ep in eps for img in (ep.target.image_a, ep.target.image_b)})


def test_aesthetics_rejects_a_head_of_the_wrong_shape(clip_setup):
    from pigbench.evaluators._rating_head import RatingHead
    from pigbench.evaluators._weights import CheckpointError

    root, _, images = clip_setup
    torch.save(RatingHead(24).state_dict(), root / "wrong.pth")
    cls = evaluators.get("aesthetics")
    ev = cls(cls.Config(model_path=str(root / "wrong.pth"), clip_path=str(root / "clip")))
    with pytest.raises(CheckpointError, match=r"does not match the model: 0 missing key\(s\) \[\], 0 unexpected key\(s\) \[\], [1-9] misshaped key\(s\)"):
        ev.setup()


def _edit_weights(folder, edit):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("damage, message", [
    (lambda d: _edit_weights(d, lambda sd: sd.pop("text_projection.weight")), r"1 missing key\(s\) \['text_projection.weight'\]"),
    (lambda d: _edit_weights(d, lambda sd: sd.__setitem__("bogus.weight", torch.zeros(2))), r"1 unexpected key\(s\) \['bogus.weight'\]"),
    (lambda d: (d / "model.safetensors").write_bytes(b""), r"could not be read: the weight file .*model.safetensors is damaged or truncated"),
    (lambda d: (d / "config.json").unlink(), r"config.json not found in the folder"),
    (lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()), "projection_dim": 24})),
     r"2 misshaped key\(s\) \['text_projection.weight', 'visual_projection.weight'\]"),
    (lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()), "model_type": "bert"})),
     r"is a 'bert' model, not 'clip'"),
])
def test_a_damaged_or_mismatched_clip_folder_is_one_checkpoint_error(tmp_path, damage, message):
    """transformers only warns on missing/unexpected keys (leaving random weights) and raises tracebacks otherwise."""
    from pigbench.evaluators._weights import CheckpointError

    tiny_clip_dir(tmp_path / "clip")
    damage(tmp_path / "clip")
    cls = evaluators.get("clipscore")
    with pytest.raises(CheckpointError, match=message):
        cls(cls.Config(model_path=str(tmp_path / "clip"))).setup()


def test_a_clip_folder_without_its_weight_file_says_it_is_incomplete_and_what_to_download(tmp_path):
    """Not that the checkpoint does not match: the folder lacks its weights, and the message says which
    files were looked for, what to download and how to point pigbench to it."""
    from pigbench.runner import set_up

    tiny_clip_dir(tmp_path / "clip")
    (tmp_path / "clip" / "model.safetensors").unlink()
    cls = evaluators.get("clipscore")
    folder = tmp_path / "clip"
    with pytest.raises(RequirementError, match=re.escape(
            f"the CLIP model at '{folder}' is incomplete: no weight file (model.safetensors, model.safetensors.index.json, "
            "pytorch_model.bin, pytorch_model.bin.index.json) in the folder; download the whole model folder "
            "(`hf download openai/clip-vit-base-patch32 --local-dir DIR`), then pass --model-path DIR or set "
            "PIGBENCH_CLIPSCORE_PATH=DIR")):
        set_up(cls(cls.Config(model_path=str(tmp_path / "clip"))), "clipscore")


VOCABULARY = ("no tokenizer vocabulary (tokenizer.json, vocab.json and merges.txt, tokenizer.model, spiece.model, "
              "sentencepiece.bpe.model or vocab.txt) in the folder")


@pytest.mark.parametrize("name", ["clipscore", "text-align"])
@pytest.mark.parametrize("missing, message", [
    ("tokenizer.json", VOCABULARY),
    ("tokenizer_config.json", "tokenizer_config.json not found in the folder"),
    ("preprocessor_config.json", "no image processor config (processor_config.json or preprocessor_config.json) in the folder"),
])
def test_a_clip_folder_without_its_tokenizer_or_processor_files_says_it_is_incomplete(tmp_path, name, missing, message):
    """Without tokenizer.json transformers built CLIPTokenizer with two tokens, so every prompt became
    unknown tokens and scores were meaningless; without preprocessor_config.json its message pointed
    at huggingface.co. Each is now one line with what to download and which flag points to it."""
    from pigbench.runner import set_up

    folder = tmp_path / "clip"
    tiny_clip_dir(folder)
    (folder / missing).unlink()
    cls = evaluators.get(name)
    with pytest.raises(RequirementError) as info:
        set_up(cls(cls.Config(model_path=str(folder))), name)
    assert str(info.value) == (f"the CLIP model at '{folder}' is incomplete: {message}; download the whole model folder "
                               f"(`hf download {cls.default_model} --local-dir DIR`), then pass --model-path DIR or set "
                               f"{cls.env_var}=DIR")


def test_a_pickscore_processor_folder_without_its_tokenizer_names_the_processor_option(tmp_path):
    from pigbench.runner import set_up

    tiny_clip_dir(tmp_path / "model")
    tiny_clip_dir(tmp_path / "processor")
    (tmp_path / "processor" / "tokenizer.json").unlink()
    cls = evaluators.get("pickscore")
    with pytest.raises(RequirementError) as info:
        set_up(cls(cls.Config(model_path=str(tmp_path / "model"), processor_path=str(tmp_path / "processor"))), "pickscore")
    assert str(info.value) == (f"the CLIP-H processor at '{tmp_path / 'processor'}' is incomplete: {VOCABULARY}; "
                               f"download the whole model folder (`hf download {cls.default_processor} --local-dir DIR`), "
                               "then pass --option processor_path=DIR or set PIGBENCH_PICKSCORE_PROCESSOR_PATH=DIR")
