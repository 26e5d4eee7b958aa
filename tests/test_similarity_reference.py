"""clip-i, text-align and dinoscore: formulas against direct HF computations, sharing and failures."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pigbench.evaluator import Runtime
from pigbench.protocol import ImageRef, Label
from pigbench.registry import evaluators
from scalar_fixtures import episode, run_predict, standard_episodes, tiny_clip_dir, write_images

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    root = tmp_path_factory.mktemp("similarity")
    clip = tiny_clip_dir(root / "clip")
    torch.manual_seed(1)
    dino = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                    image_size=32, patch_size=8)).eval()
    dino.save_pretrained(root / "dino")
    BitImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(root / "dino")
    processors = {"clip": CLIPImageProcessorPil.from_pretrained(root / "clip"), "dino": BitImageProcessorPil.from_pretrained(root / "dino")}
    return root, clip, dino, write_images(root / "images"), processors


def _clip_image(setup, ref):
    _, clip, _, _, processors = setup
    pixels = torch.as_tensor(processors["clip"](ref.open(), return_tensors="pt")["pixel_values"])
    with torch.no_grad():
        out = clip.get_image_features(pixel_values=pixels)
    return getattr(out, "pooler_output", out)[0]


def _dino_image(setup, ref):
    _, _, dino, _, processors = setup
    pixels = torch.as_tensor(processors["dino"](ref.open(), return_tensors="pt")["pixel_values"])
    with torch.no_grad():
        return dino(pixel_values=pixels).pooler_output[0]


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _expected(embed, ep, image, subtract):
    x = embed(image)
    s = sum(_cos(x, embed(r.preferred)) for r in ep.references) / len(ep.references)
    if subtract:
        s -= sum(_cos(x, embed(r.rejected)) for r in ep.references) / len(ep.references)
    return s


@pytest.mark.parametrize("name, embed_fn, path", [("clip-i", _clip_image, "clip"), ("dinoscore", _dino_image, "dino")])
@pytest.mark.parametrize("subtract", [False, True])
def test_reference_similarity_formula(setup, name, embed_fn, path, subtract):
    root, _, _, images, _ = setup
    cls = evaluators.get(name)
    ev = cls(cls.Config(model_path=str(root / path), subtract_rejected=subtract), Runtime(batch_size=3))
    eps = standard_episodes(images, with_refs=True)
    cache = {}

    def embed(ref):
        return cache.setdefault(ref.content_hash, embed_fn(setup, ref))

    for ep, (sa, sb) in zip(eps, run_predict(ev, eps)):
        assert sa == pytest.approx(_expected(embed, ep, ep.target.image_a, subtract), abs=1e-4)
        assert sb == pytest.approx(_expected(embed, ep, ep.target.image_b, subtract), abs=1e-4)
    assert ev.kind == "similarity" and ev.uses_references
    read = {img.content_hash for ep in eps for img in (ep.target.image_a, ep.target.image_b, *(
        i for r in ep.references for i in ((r.preferred, r.rejected) if subtract else (r.preferred,))))}
    assert ev.images.encoded_images == len(read)  # the rejected references only when subtracted


def test_images_shared_by_episodes_and_references_are_embedded_once(setup):
    root, _, _, images, _ = setup
    cls = evaluators.get("clip-i")
    ev = cls(cls.Config(model_path=str(root / "clip"), subtract_rejected=True), Runtime(batch_size=4))
    ev.setup()
    seen = []
    encode = ev.images.encode
    ev.images.encode = lambda x: (seen.append(len(x)), encode(x))[1]
    eps = standard_episodes(images, with_refs=True)  # image 0 is a target in 2 episodes and a reference in 2
    run_predict(ev, eps)
    run_predict(ev, eps[::-1])
    distinct = {img.content_hash for ep in eps for img in
                [ep.target.image_a, ep.target.image_b] + [i for r in ep.references for i in (r.preferred, r.rejected)]}
    assert sum(seen) == ev.images.encoded_images == len(distinct) == 8
    assert seen == [4, 4]  # one bulk pass over the batch of episodes, in runtime.batch_size chunks


def test_text_align_averages_over_distinct_reference_prompts(setup):
    from transformers import AutoTokenizer

    root, clip, _, images, _ = setup
    tok = AutoTokenizer.from_pretrained(root / "clip")
    cls = evaluators.get("text-align")
    ev = cls(cls.Config(model_path=str(root / "clip")))
    refs = [("a blue cat", images[4], images[5]), ("a blue cat", images[6], images[5]), ("the sky", images[2], images[3])]
    ep = episode("u", "s", "a red dog", images[0], images[1], refs)
    (sa, sb), = run_predict(ev, [ep])

    def text(t):
        with torch.no_grad():
            out = clip.get_text_features(**tok([t], padding=True, return_tensors="pt"))
        return getattr(out, "pooler_output", out)[0]

    for img, s in ((images[0], sa), (images[1], sb)):
        x = _clip_image(setup, img)
        assert s == pytest.approx((_cos(x, text("a blue cat")) + _cos(x, text("the sky"))) / 2, abs=1e-4)
    assert ev.texts.encoded_texts == 2  # the target prompt is not encoded: it is not used
    assert ev.images.encoded_images == 2  # nor are the 5 reference images


def test_text_align_scores_apart_users_whose_reference_images_match_but_prompts_differ(setup):
    root, _, _, images, _ = setup
    cls = evaluators.get("text-align")
    cat = episode("u1", "s1", "p", images[0], images[1], [("a blue cat", images[4], images[5])])
    sky = episode("u2", "s2", "p", images[0], images[1], [("the sky", images[4], images[5])])
    together = [s for pair in run_predict(cls(cls.Config(model_path=str(root / "clip"))), [cat, sky]) for s in pair]
    alone = [s for ep in (cat, sky) for s in run_predict(cls(cls.Config(model_path=str(root / "clip"))), [ep])[0]]
    assert together == pytest.approx(alone, abs=1e-5) and alone[:2] != pytest.approx(alone[2:], abs=1e-3)


def test_no_references_or_a_broken_reference_gives_invalid_for_that_episode_only(setup):
    root, _, _, images, _ = setup
    cls = evaluators.get("dinoscore")
    ev = cls(cls.Config(model_path=str(root / "dino")))
    broken = ImageRef("broken-ref", b"\x89PNG but not really")
    eps = [episode("u1", "s1", "p", images[0], images[1]),
           episode("u2", "s2", "p", images[0], images[1], [("q", broken, images[2])]),
           episode("u3", "s3", "p", images[0], images[1], [("q", images[3], images[2])])]
    preds = ev.predict([e.without_gold() for e in eps])
    assert [p.label for p in preds[:2]] == [Label.INVALID, Label.INVALID]
    assert "no reference pairs" in preds[0].error and "broken-ref" in preds[1].error
    assert preds[2].label in (Label.A, Label.B) and preds[2].score_a is not None


def test_dinoscore_refuses_a_checkpoint_with_an_extra_key(setup, tmp_path):
    """transformers would load it with a warning; the key must be named instead."""
    import shutil

    from safetensors.torch import load_file, save_file

    from pigbench.evaluators._weights import CheckpointError

    shutil.copytree(setup[0] / "dino", tmp_path / "dino")
    state = load_file(str(tmp_path / "dino" / "model.safetensors"))
    save_file({**state, "head.weight": torch.zeros(2)}, str(tmp_path / "dino" / "model.safetensors"), metadata={"format": "pt"})
    cls = evaluators.get("dinoscore")
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\) \['head.weight'\]"):
        cls(cls.Config(model_path=str(tmp_path / "dino"))).setup()


def test_a_dino_folder_without_its_image_processor_config_says_it_is_incomplete(setup, tmp_path):
    """transformers' OSError pointed at huggingface.co; now one line says what to download and how to point to it."""
    import shutil

    from pigbench.evaluator import RequirementError
    from pigbench.runner import set_up

    root = setup[0]
    folder = tmp_path / "dino"
    shutil.copytree(root / "dino", folder)
    (folder / "preprocessor_config.json").unlink()
    cls = evaluators.get("dinoscore")
    with pytest.raises(RequirementError) as info:
        set_up(cls(cls.Config(model_path=str(folder))), "dinoscore")
    assert str(info.value) == (f"the DINOv2 model at '{folder}' is incomplete: no image processor config "
                               "(processor_config.json or preprocessor_config.json) in the folder; download the whole "
                               f"model folder (`hf download {cls.default_model} --local-dir DIR`), then pass --model-path "
                               f"DIR or set {cls.env_var}=DIR")
