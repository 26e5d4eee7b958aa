"""imagereward on a tiny random checkpoint in the original ``ImageReward.pt`` layout.

The reference runs the original architecture from the checkpoint's own keys: timm's
VisionTransformer (whose names BLIP's ViT shares) and a functional BERT with cross-attention
written from BLIP's med.py description (bidirectional self-attention with a -10000 padding
mask, cross-attention to all image tokens, post-norm residuals), then the linear MLP and
the published standardization.
"""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("transformers")

import torch.nn.functional as F
from torchvision import transforms as T

from pigbench.evaluator import Runtime
from pigbench.evaluators._weights import CheckpointError
from pigbench.registry import evaluators
from scalar_fixtures import bert_tokenizer, run_predict, standard_episodes, write_images

pytestmark = pytest.mark.models

VISION, TEXT, LAYERS, TEXT_HEADS = 128, 32, 2, 2
MED = {"vocab_size": 0, "hidden_size": TEXT, "intermediate_size": 48, "num_hidden_layers": LAYERS,
       "num_attention_heads": TEXT_HEADS, "max_position_embeddings": 64, "hidden_act": "gelu",
       "layer_norm_eps": 1e-12, "pad_token_id": 0, "encoder_width": VISION, "add_cross_attention": True}
MEAN, STD = 0.16717362830052426, 1.0333394966054072
# OpenAI CLIP's normalization, as published (openai/CLIP clip.py, open_clip constants): spelled out here
# so that a wrong constant in pigbench cannot agree with itself.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _vit():
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=VISION, depth=LAYERS, num_heads=VISION // 64, num_classes=0, global_pool="")


def _checkpoint(vocab: int) -> dict[str, torch.Tensor]:
    """Random tensors under ImageReward.pt's names (blip.visual_encoder / text_encoder / *_proj, mlp)."""
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=g)

    torch.manual_seed(0)
    sd = {f"blip.visual_encoder.{k}": v.detach().clone() for k, v in _vit().state_dict().items()}
    sd["blip.visual_encoder.pos_embed"] = rnd(1, 17, VISION)
    sd["blip.visual_encoder.cls_token"] = rnd(1, 1, VISION)
    t = "blip.text_encoder."
    sd[t + "embeddings.word_embeddings.weight"] = rnd(vocab, TEXT)
    sd[t + "embeddings.position_embeddings.weight"] = rnd(64, TEXT)
    sd[t + "embeddings.position_ids"] = torch.arange(64)[None]  # persistent in BLIP's med.py
    for name in ("embeddings.LayerNorm",) + tuple(f"encoder.layer.{i}.{part}.LayerNorm" for i in range(LAYERS)
                                                  for part in ("attention.output", "crossattention.output", "output")):
        sd[t + name + ".weight"], sd[t + name + ".bias"] = rnd(TEXT, scale=0.1, offset=1.0), rnd(TEXT, scale=0.1)
    for i in range(LAYERS):
        p = f"{t}encoder.layer.{i}."
        for att, kv_in in (("attention", TEXT), ("crossattention", VISION)):
            sd[p + f"{att}.self.query.weight"], sd[p + f"{att}.self.query.bias"] = rnd(TEXT, TEXT), rnd(TEXT)
            for kv in ("key", "value"):
                sd[p + f"{att}.self.{kv}.weight"], sd[p + f"{att}.self.{kv}.bias"] = rnd(TEXT, kv_in), rnd(TEXT)
            sd[p + f"{att}.output.dense.weight"], sd[p + f"{att}.output.dense.bias"] = rnd(TEXT, TEXT), rnd(TEXT)
        sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"] = rnd(48, TEXT), rnd(48)
        sd[p + "output.dense.weight"], sd[p + "output.dense.bias"] = rnd(TEXT, 48), rnd(TEXT)
    sd["blip.vision_proj.weight"], sd["blip.vision_proj.bias"] = rnd(8, VISION), rnd(8)
    sd["blip.text_proj.weight"], sd["blip.text_proj.bias"] = rnd(8, TEXT), rnd(8)
    for i, (o, n) in zip((0, 2, 4, 6, 7), ((1024, TEXT), (128, 1024), (64, 128), (16, 64), (1, 16))):
        sd[f"mlp.layers.{i}.weight"], sd[f"mlp.layers.{i}.bias"] = rnd(o, n, scale=1 / math.sqrt(n)), rnd(o, scale=0.05)
    return sd


@pytest.fixture(scope="module")
def ir_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagereward")
    tok = bert_tokenizer(root / "bert")
    vocab = len(tok) + 2  # BLIP adds [DEC] and [ENC]
    sd = _checkpoint(vocab)
    (root / "model").mkdir()
    torch.save(sd, root / "model" / "ImageReward.pt")
    (root / "model" / "med_config.json").write_text(json.dumps({**MED, "vocab_size": vocab}))
    return root, sd, tok, write_images(root / "images")


def _layer_norm(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps=1e-12)


def _attention(h, kv, sd, p, mask):
    def heads(x):
        return x.view(x.shape[0], x.shape[1], TEXT_HEADS, -1).transpose(1, 2)

    q = heads(F.linear(h, sd[p + "self.query.weight"], sd[p + "self.query.bias"]))
    k = heads(F.linear(kv, sd[p + "self.key.weight"], sd[p + "self.key.bias"]))
    v = heads(F.linear(kv, sd[p + "self.value.weight"], sd[p + "self.value.bias"]))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
    ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(h.shape)
    return _layer_norm(F.linear(ctx, sd[p + "output.dense.weight"], sd[p + "output.dense.bias"]) + h, sd, p + "output.LayerNorm")


@pytest.fixture(scope="module")
def reference_vit(ir_setup):
    vit = _vit()
    sd = ir_setup[1]
    vit.load_state_dict({k[len("blip.visual_encoder."):]: v for k, v in sd.items() if k.startswith("blip.visual_encoder.")})
    return vit.eval()


def _reference_reward(vit, sd, tok, image, prompt):
    pre = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                     T.Normalize(CLIP_MEAN, CLIP_STD)])
    tokens = tok(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    t = "blip.text_encoder."
    with torch.no_grad():
        image_embeds = vit.forward_features(pre(image.convert("RGB"))[None])
        ids = tokens["input_ids"]
        h = sd[t + "embeddings.word_embeddings.weight"][ids] + sd[t + "embeddings.position_embeddings.weight"][: ids.shape[1]]
        h = _layer_norm(h, sd, t + "embeddings.LayerNorm")
        pad_mask = (1.0 - tokens["attention_mask"][:, None, None, :].float()) * -10000.0
        for i in range(LAYERS):
            p = f"{t}encoder.layer.{i}."
            h = _attention(h, h, sd, p + "attention.", pad_mask)
            h = _attention(h, image_embeds, sd, p + "crossattention.", 0.0)
            inter = F.gelu(F.linear(h, sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"]))
            h = _layer_norm(F.linear(inter, sd[p + "output.dense.weight"], sd[p + "output.dense.bias"]) + h, sd, p + "output.LayerNorm")
        x = h[:, 0]
        for i in (0, 2, 4, 6, 7):
            x = F.linear(x, sd[f"mlp.layers.{i}.weight"], sd[f"mlp.layers.{i}.bias"])
    return ((x - MEAN) / STD).item()


def test_imagereward_matches_the_original_architecture(ir_setup, reference_vit):
    root, sd, tok, images = ir_setup
    cls = evaluators.get("imagereward")
    ev = cls(cls.Config(model_path=str(root / "model"), tokenizer_path=str(root / "bert")), Runtime(batch_size=3))
    ev.check_requirements(ev.config)
    eps = standard_episodes(images)
    scores = run_predict(ev, eps)
    for ep, (sa, sb) in zip(eps, scores):
        assert sa == pytest.approx(_reference_reward(reference_vit, sd, tok, ep.target.image_a.open(), ep.target.prompt), abs=1e-4)
        assert sb == pytest.approx(_reference_reward(reference_vit, sd, tok, ep.target.image_b.open(), ep.target.prompt), abs=1e-4)
    assert len({round(s, 4) for pair in scores for s in pair}) > 4  # the scores do depend on image and prompt
    assert ev.images.encoded_images == 5
    assert ev.images.get(images[0]).shape == (17, VISION)  # cached ViT tokens, cross-attended per prompt


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("blip.text_encoder.encoder.layer.1.crossattention.self.key.bias"), r"1 missing key"),
    (lambda sd: sd.__setitem__("blip.itm_head.weight", torch.zeros(2, TEXT)), r"unexpected key\(s\) \['blip.itm_head.weight'\]"),
])
def test_imagereward_loading_is_strict(ir_setup, tmp_path, edit, message):
    root, sd, _, _ = ir_setup
    bad = dict(sd)
    edit(bad)
    torch.save(bad, tmp_path / "ImageReward.pt")
    (tmp_path / "med_config.json").write_text((root / "model" / "med_config.json").read_text())
    cls = evaluators.get("imagereward")
    with pytest.raises(CheckpointError, match=message):
        cls(cls.Config(model_path=str(tmp_path), tokenizer_path=str(root / "bert"))).setup()


@pytest.mark.parametrize("damage, message", [
    (lambda sd, med: ({**sd}, ""), r"med_config.json is not valid JSON: Expecting value"),
    (lambda sd, med: ({**sd}, json.dumps({k: v for k, v in med.items() if k != "hidden_act"})),
     r"model config .*med_config.json has no 'hidden_act'"),
    (lambda sd, med: ({k: v for k, v in sd.items() if k != "blip.visual_encoder.pos_embed"}, json.dumps(med)),
     r"checkpoint .*ImageReward.pt has no 'blip.visual_encoder.pos_embed'"),
])
def test_a_damaged_med_config_or_foreign_checkpoint_is_one_checkpoint_error(ir_setup, tmp_path, damage, message):
    """Before, a broken med_config.json ended in a bare JSON message naming no file, a missing key in a traceback."""
    root, sd, _, _ = ir_setup
    state, med = damage(sd, json.loads((root / "model" / "med_config.json").read_text()))
    torch.save(state, tmp_path / "ImageReward.pt")
    (tmp_path / "med_config.json").write_text(med)
    cls = evaluators.get("imagereward")
    with pytest.raises(CheckpointError, match=message):
        cls(cls.Config(model_path=str(tmp_path), tokenizer_path=str(root / "bert"))).setup()


@pytest.mark.parametrize("raw", ["0", "1", "-5"])
def test_imagereward_refuses_a_max_length_the_tokenizer_ignores_or_fails_on(raw):
    """max_length=0 or 1 silently kept whole prompts (the tokenizer skips truncation to fewer tokens
    than [CLS] and [SEP]); a negative one made every prediction INVALID after the model had loaded."""
    cls = evaluators.get("imagereward")
    with pytest.raises(ValueError, match=f"^imagereward: option max_length must be >= 2 .*got {raw}$"):
        cls.Config.from_options({"max_length": raw})
    assert cls.Config.from_options({"max_length": "2"}).max_length == 2


def test_imagereward_refuses_a_max_length_beyond_the_text_encoders_positions(ir_setup, tmp_path):
    """max_length above BERT's position embeddings was accepted, then every sample failed at scoring:
    the config refuses more than ImageReward v1.0's 512, loading more than the med config's own limit."""
    cls = evaluators.get("imagereward")
    with pytest.raises(ValueError, match=r"^imagereward: option max_length must be <= 512 .*got 513$"):
        cls.Config.from_options({"max_length": "513"})
    assert cls.Config.from_options({"max_length": "512"}).max_length == 512
    root = ir_setup[0]
    ev = cls(cls.Config(model_path=str(root / "model"), tokenizer_path=str(root / "bert"), max_length=65))
    with pytest.raises(ValueError, match=r"^imagereward: option max_length must be <= 64 .*med_config.json.*got 65$"):
        ev.setup()
    assert not hasattr(ev, "net")


def test_a_tokenizer_folder_without_its_vocabulary_says_it_is_incomplete(ir_setup, tmp_path):
    """Without vocab.txt and tokenizer.json transformers built BertTokenizer from its defaults (another
    vocabulary than the folder's); now one line says what to download and which option points to it."""
    import shutil

    root = ir_setup[0]
    shutil.copytree(root / "bert", tmp_path / "bert")
    for name in ("vocab.txt", "tokenizer.json"):
        (tmp_path / "bert" / name).unlink(missing_ok=True)
    cls = evaluators.get("imagereward")
    with pytest.raises(CheckpointError) as info:
        cls(cls.Config(model_path=str(root / "model"), tokenizer_path=str(tmp_path / "bert"))).setup()
    assert str(info.value) == (
        f"the bert-base-uncased tokenizer at '{tmp_path / 'bert'}' is incomplete: no tokenizer vocabulary (tokenizer.json, "
        "vocab.json and merges.txt, tokenizer.model, spiece.model, sentencepiece.bpe.model or vocab.txt) in the folder; "
        "download the whole model folder (`hf download bert-base-uncased --local-dir DIR`), then pass "
        "--option tokenizer_path=DIR or set PIGBENCH_BERT_PATH=DIR")
