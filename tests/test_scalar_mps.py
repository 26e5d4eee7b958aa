"""mps on a tiny random checkpoint in the released layout (``model.*`` HF CLIP + ``cross_model.*``).

The reference follows Kwai-Kolors/MPS ``infer_one_sample`` one sample at a time: HF CLIP
processor, prompt and condition tokenized to 77 with max-length padding, token-level projected
features, condition-similarity mask (normalized by its maximum, threshold 0.3), and the cross
model written functionally from the checkpoint tensors (pre-norm multi-query cross-attention with
a parallel SwiGLU feed-forward, then rotary multi-query self-attention with a fused SwiGLU).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch.nn.functional as F
from safetensors.torch import save_file

from pigbench.evaluator import RequirementError, Runtime
from pigbench.evaluators._weights import CheckpointError
from pigbench.registry import evaluators
from scalar_fixtures import clip_image_processor, clip_tokenizer, run_predict, standard_episodes, tiny_clip_config, write_images

pytestmark = pytest.mark.models

DIM, HEADS, DIM_HEAD, FF, LAYERS = 32, 2, 16, 128, 2
# infer_one_sample's default condition (Kwai-Kolors/MPS eval_overall_mps_on_imagereward.py), spelled out here
# so that a changed condition in pigbench cannot agree with itself.
OVERALL_CONDITION = ("light, color, clarity, tone, style, ambiance, artistry, shape, face, hair, hands, limbs, "
                     "structure, instance, texture, quantity, attributes, position, number, location, word, things.")


def _checkpoint(clip_model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)

    def rnd(*shape, scale=0.15):
        return scale * torch.randn(*shape, generator=g)

    sd = {f"model.{k}": v.clone() for k, v in clip_model.state_dict().items()}
    sd["model.text_model.embeddings.position_ids"] = torch.arange(77)[None]  # saved by older transformers
    for i in range(LAYERS):
        c, b = f"cross_model.layers.{i}.0.fn.", f"cross_model.layers.{i}.1.fn."
        for p in (c, b):
            sd[p + "norm.weight"], sd[p + "norm.bias"] = 1 + rnd(DIM), torch.zeros(DIM)
        sd[c + "to_q.weight"], sd[c + "to_kv.weight"] = rnd(HEADS * DIM_HEAD, DIM), rnd(2 * DIM_HEAD, DIM)
        sd[c + "to_out.weight"] = rnd(DIM, HEADS * DIM_HEAD)
        sd[c + "ff.0.weight"], sd[c + "ff.2.weight"] = rnd(2 * FF, DIM), rnd(DIM, FF)
        sd[b + "rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, DIM_HEAD, 2).float() / DIM_HEAD))
        sd[b + "fused_attn_ff_proj.weight"] = rnd(HEADS * DIM_HEAD + 2 * DIM_HEAD + 2 * FF, DIM)
        sd[b + "attn_out.weight"], sd[b + "ff_out.1.weight"] = rnd(DIM, HEADS * DIM_HEAD), rnd(DIM, FF)
    return sd


@pytest.fixture(scope="module")
def mps_setup(tmp_path_factory):
    from transformers import CLIPModel

    root = tmp_path_factory.mktemp("mps")
    torch.manual_seed(0)
    clip = CLIPModel(tiny_clip_config(projection_dim=DIM)).eval()
    clip.config.save_pretrained(root / "clip")
    clip_tokenizer(root / "clip")
    clip_image_processor(root / "clip")
    sd = _checkpoint(clip)
    torch.save(sd, root / "MPS_overall_checkpoint.pth")
    return root, clip, sd, write_images(root / "images")


def _swiglu(x):
    a, gate = x.chunk(2, dim=-1)
    return F.silu(gate) * a


def _rotate(t, inv_freq):
    freqs = torch.einsum("i,j->ij", torch.arange(t.shape[-2], dtype=torch.float32), inv_freq)
    pos = torch.cat((freqs, freqs), dim=-1)
    half = t.shape[-1] // 2
    return t * pos.cos() + torch.cat((-t[..., half:], t[..., :half]), dim=-1) * pos.sin()


def _cross_model(sd, x, ctx, mask):
    for i in range(LAYERS):
        c, b = f"cross_model.layers.{i}.0.fn.", f"cross_model.layers.{i}.1.fn."
        xn = F.layer_norm(x, (DIM,), sd[c + "norm.weight"], sd[c + "norm.bias"])
        q = (xn @ sd[c + "to_q.weight"].T).view(1, -1, HEADS, DIM_HEAD).permute(0, 2, 1, 3) * DIM_HEAD**-0.5
        k, v = (ctx @ sd[c + "to_kv.weight"].T).chunk(2, dim=-1)
        sim = q @ k[:, None].transpose(-1, -2) + mask[:, None]
        out = (sim.softmax(-1) @ v[:, None]).permute(0, 2, 1, 3).reshape(1, -1, HEADS * DIM_HEAD)
        x = out @ sd[c + "to_out.weight"].T + _swiglu(xn @ sd[c + "ff.0.weight"].T) @ sd[c + "ff.2.weight"].T + x
        xn = F.layer_norm(x, (DIM,), sd[b + "norm.weight"], sd[b + "norm.bias"])
        q, k, v, ff = (xn @ sd[b + "fused_attn_ff_proj.weight"].T).split((HEADS * DIM_HEAD, DIM_HEAD, DIM_HEAD, 2 * FF), dim=-1)
        q = _rotate(q.view(1, -1, HEADS, DIM_HEAD).permute(0, 2, 1, 3), sd[b + "rotary_emb.inv_freq"]) * DIM_HEAD**-0.5
        k = _rotate(k, sd[b + "rotary_emb.inv_freq"])
        out = ((q @ k[:, None].transpose(-1, -2)).softmax(-1) @ v[:, None]).permute(0, 2, 1, 3).reshape(1, -1, HEADS * DIM_HEAD)
        x = out @ sd[b + "attn_out.weight"].T + _swiglu(ff) @ sd[b + "ff_out.1.weight"].T + x
    return x


@pytest.fixture(scope="module")
def processors(mps_setup):
    from transformers import AutoTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    root = mps_setup[0]
    return AutoTokenizer.from_pretrained(root / "clip"), CLIPImageProcessorPil.from_pretrained(root / "clip")


def _infer_one_sample(processors, clip, sd, image, prompt, threshold=0.3):
    tok, image_processor = processors
    pixels = torch.as_tensor(image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"])

    def tokenize(text):
        return tok(text, max_length=77, padding="max_length", truncation=True, return_tensors="pt").input_ids

    def text_features(ids):
        out = clip.text_model(input_ids=ids)
        return clip.text_projection(out[0]), clip.text_projection(out[1])

    with torch.no_grad():
        text_f, text_eos = text_features(tokenize(prompt))
        image_f = clip.visual_projection(clip.vision_model(pixel_values=pixels)[0])
        condition_f, _ = text_features(tokenize(OVERALL_CONDITION))
        sim = torch.einsum("bid,bjd->bji", text_f, condition_f).max(dim=1, keepdim=True)[0]
        sim = sim / sim.max()
        mask = torch.where(sim > threshold, 0.0, float("-inf")).repeat(1, image_f.shape[1], 1)
        fused = _cross_model(sd, image_f, text_f, mask)[:, 0]
        fused, text_eos = fused / fused.norm(dim=-1, keepdim=True), text_eos / text_eos.norm(dim=-1, keepdim=True)
        return (clip.logit_scale.exp() * text_eos @ fused.T).item()


def test_mps_matches_infer_one_sample(mps_setup, processors):
    root, clip, sd, images = mps_setup
    cls = evaluators.get("mps")
    ev = cls(cls.Config(model_path=str(root / "MPS_overall_checkpoint.pth"), clip_path=str(root / "clip")), Runtime(batch_size=4))
    ev.check_requirements(ev.config)
    eps = standard_episodes(images)
    scores = run_predict(ev, eps)
    for ep, (sa, sb) in zip(eps, scores):
        assert sa == pytest.approx(_infer_one_sample(processors, clip, sd, ep.target.image_a.open(), ep.target.prompt), abs=1e-4)
        assert sb == pytest.approx(_infer_one_sample(processors, clip, sd, ep.target.image_b.open(), ep.target.prompt), abs=1e-4)
    assert len({round(s, 4) for pair in scores for s in pair}) > 4
    assert ev.images.get(images[0]).shape == (17, DIM)  # projected patch tokens are what is cached
    # the character-level test tokenizer keeps only the condition's first 75 characters: its rest is checked here
    assert ev.config.condition == OVERALL_CONDITION


def test_mps_reads_the_safetensors_export_and_mask_threshold_matters(mps_setup, processors, tmp_path):
    root, clip, sd, images = mps_setup
    export = tmp_path / "MPS_overall_checkpoint_diffsynth.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items() if "position_ids" not in k}, export)
    cls = evaluators.get("mps")
    eps = standard_episodes(images)[:2]
    base = run_predict(cls(cls.Config(model_path=str(tmp_path), clip_path=str(root / "clip"))), eps)  # its folder
    assert base[0][0] == pytest.approx(_infer_one_sample(processors, clip, sd, eps[0].target.image_a.open(), eps[0].target.prompt), abs=1e-4)
    loose = run_predict(cls(cls.Config(model_path=str(export), clip_path=str(root / "clip"),
                                       mask_threshold=-2.0)), eps)
    assert loose[0][0] == pytest.approx(_infer_one_sample(processors, clip, sd, eps[0].target.image_a.open(), eps[0].target.prompt, -2.0), abs=1e-4)
    assert loose != base


@pytest.mark.parametrize("raw", ["nan", "1", "2.5", "inf"])
def test_mps_refuses_a_mask_threshold_that_masks_nothing_by_accident_or_everything(raw):
    """mask_threshold=nan masked no token (sim <= nan is false), silently; 1 or more masks every token
    (the similarities are scaled to a maximum of 1)."""
    cls = evaluators.get("mps")
    with pytest.raises(ValueError, match=f"^mps: option mask_threshold must be a finite number below 1, got {float(raw)!r}$"):
        cls.Config.from_options({"mask_threshold": raw})
    assert cls.Config.from_options({"mask_threshold": "-2"}).mask_threshold == -2.0


def test_mps_loading_is_strict(mps_setup, tmp_path):
    root, _, sd, _ = mps_setup
    torch.save({k: v for k, v in sd.items() if k != "cross_model.layers.1.1.fn.attn_out.weight"}, tmp_path / "m.pth")
    cls = evaluators.get("mps")
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['cross_model.layers.1.1.fn.attn_out.weight'\]"):
        cls(cls.Config(model_path=str(tmp_path / "m.pth"), clip_path=str(root / "clip"))).setup()
    torch.save({k: v for k, v in sd.items() if not k.startswith("cross_model.")}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other.pth has no tensor 'cross_model.layers.0.0.fn.to_q.weight'.*not MPS_overall"):
        cls(cls.Config(model_path=str(tmp_path / "other.pth"), clip_path=str(root / "clip"))).setup()
    (tmp_path / "garbage.pth").write_bytes(b"garbage\n")
    with pytest.raises(CheckpointError, match=r"the MPS checkpoint at .*garbage.pth could not be read"):
        cls(cls.Config(model_path=str(tmp_path / "garbage.pth"), clip_path=str(root / "clip"))).setup()


def test_another_clip_config_does_not_reuse_the_disk_cached_image_tokens(mps_setup, tmp_path):
    import json
    import shutil

    root, _, _, images = mps_setup
    other = tmp_path / "clip-4-heads"  # same tensor shapes, so the checkpoint loads; other image tokens
    shutil.copytree(root / "clip", other)
    config = json.loads((other / "config.json").read_text())
    config["vision_config"]["num_attention_heads"] = 4
    (other / "config.json").write_text(json.dumps(config))
    cls = evaluators.get("mps")
    eps = standard_episodes(images)

    def scores(clip, cache_dir):
        return run_predict(cls(cls.Config(model_path=str(root / "MPS_overall_checkpoint.pth"), clip_path=str(clip)),
                               Runtime(batch_size=4, cache_dir=cache_dir)), eps)

    first = scores(root / "clip", str(tmp_path / "cache"))
    fresh = scores(other, None)
    assert fresh != first
    assert scores(other, str(tmp_path / "cache")) == fresh


def test_a_clip_folder_without_config_json_says_it_is_incomplete(mps_setup, tmp_path):
    """CLIPConfig.from_pretrained ran before any folder check, so a CLIP-H folder without config.json
    raised transformers' several-line OSError instead of the one-line message the other evaluators give."""
    import shutil

    from pigbench.runner import set_up

    root = mps_setup[0]
    clip = tmp_path / "clip"
    shutil.copytree(root / "clip", clip)
    (clip / "config.json").unlink()
    cls = evaluators.get("mps")
    with pytest.raises(RequirementError) as info:
        set_up(cls(cls.Config(model_path=str(root / "MPS_overall_checkpoint.pth"), clip_path=str(clip))), "mps")
    assert str(info.value) == (f"the CLIP-H config/processor at '{clip}' is incomplete: config.json not found in the folder; "
                               f"download the whole model folder (`hf download {cls.default_clip} --local-dir DIR`), "
                               "then pass --option clip_path=DIR or set PIGBENCH_MPS_CLIP_PATH=DIR")
