"""The fast generation engine gives transformers' greedy outputs, at any batch size, with shared
prefixes, early exit and batch compaction; its backend isolates failures and loads LoRA adapters."""

from __future__ import annotations

import copy
import io
import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from pigbench.fastgen.engine import Qwen2VLEngine  # noqa: E402
from pigbench.fastgen.inputs import GenerationSettings, ImageInput, Prompt  # noqa: E402
from pigbench.fastgen.rope import mrope_positions  # noqa: E402
from pigbench.judging.random_models import qwen2_vl  # noqa: E402

pytestmark = pytest.mark.models

NEW = 12


def chaotic(model):
    """Large random weights: varied greedy outputs whose top choices are far apart."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, processor = qwen2_vl(seed=0)
    model.generation_config.eos_token_id = None  # stop only where a test says
    model.generation_config.pad_token_id = 0
    return chaotic(model), processor


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy())


def encode(processor, context: str, target: str, images: list[int], share_key=None):
    """(engine prompt, processor batch) for a user turn: context, then each image, then target."""
    content = [{"type": "text", "text": context}]
    for k in images:
        content += [{"type": "text", "text": f" Image {k}:"}, {"type": "image"}]
    content.append({"type": "text", "text": target})
    chat = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    pics = [picture(k, (28 * (1 + k % 3), 28 * (1 + k % 2))) for k in images]
    batch = processor(text=[chat], images=pics or None, return_tensors="pt")
    inputs = ()
    if images:
        grids = batch["image_grid_thw"].tolist()
        pixels = batch["pixel_values"].split([t * h * w for t, h, w in grids])
        inputs = tuple(ImageInput(("img", k), px, tuple(g)) for k, px, g in zip(images, pixels, grids))
    return Prompt(tuple(batch["input_ids"][0].tolist()), inputs, share_key), batch


def reference(model, batch, eos: tuple[int, ...] = (), min_new: int = 0, penalty: float = 1.0) -> list[int]:
    """transformers' greedy tokens for one prompt, cut before the first of ``eos`` (none: never stops)."""
    batch = {k: v.to(model.device) for k, v in batch.items()}
    out = model.generate(**batch, max_new_tokens=NEW, min_new_tokens=min_new, do_sample=False,
                         eos_token_id=list(eos) or None, repetition_penalty=penalty)
    tokens = out[0, batch["input_ids"].shape[1]:].tolist()
    stops = [i for i, t in enumerate(tokens) if t in eos]
    return tokens[: stops[0]] if stops else tokens


def make_workload(model, processor, penalty: float = 1.0):
    """Six prompts of two users (each user's context shared), their reference outputs with
    repetition penalty ``penalty``, and EOS ids that at least half of them emit early (so early exit
    and compaction happen)."""
    prompts, full = [], []
    for user in range(2):
        context = f"User {user} likes " + "warm red light and soft shapes, " * (2 + 3 * user)
        for t in range(3):
            p, batch = encode(processor, context, f" Target {t}" + "?" * t, [10 * user + t, 10 * user + t + 5], user)
            prompts.append(p)
            full.append(reference(model, batch, penalty=penalty))
    # EOS ids := tokens found early in other outputs than the last one, until half of them stop early
    # (greedy output with EOS is a prefix of the one without)
    early = [set(out[1 : NEW - 2]) for out in full]
    eos: list[int] = []
    for token in sorted(set().union(*early) - set(full[-1]), key=lambda t: (-sum(t in e for e in early), t)):
        eos.append(token)
        if sum(bool(e & set(eos)) for e in early) >= 3:
            break
    expected = [out[: min([out.index(t) for t in eos if t in out], default=NEW)] for out in full]
    assert sum(len(e) < NEW - 2 for e in expected) >= 3 and len(expected[-1]) == NEW
    return prompts, expected, tuple(eos)


@pytest.fixture(scope="module")
def workload(tiny):
    return make_workload(*tiny)


@pytest.fixture(scope="module", params=[1.05, 1.5])
def penalized(tiny, request):
    """(penalty, the workload with generate's outputs under that repetition penalty)."""
    return request.param, make_workload(*tiny, penalty=request.param)


def test_mrope_positions_match_transformers(tiny):
    model, processor = tiny
    prompt, batch = encode(processor, "Two pictures:", " which?", [1, 2, 4])
    ours, nxt = mrope_positions(prompt.token_ids, model.config.image_token_id, [im.grid_thw for im in prompt.images],
                                model.config.vision_config.spatial_merge_size)
    kwargs = {"mm_token_type_ids": batch["mm_token_type_ids"]} if "mm_token_type_ids" in batch else {}
    theirs, delta = model.model.get_rope_index(batch["input_ids"], image_grid_thw=batch["image_grid_thw"], **kwargs)
    assert torch.equal(ours, theirs[:, 0])
    assert nxt == len(prompt.token_ids) + int(delta)


def test_engine_matches_transformers_generate_one_prompt_at_a_time(tiny, workload):
    model, _ = tiny
    prompts, expected, eos = workload
    engine = Qwen2VLEngine(model)
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, batch_size=1)
    assert engine.generate(prompts, settings) == expected


@pytest.mark.parametrize("batch_size", [2, 64])
def test_batched_and_prefix_shared_generation_agrees_with_batch_one(tiny, workload, batch_size):
    model, _ = tiny
    prompts, expected, eos = workload
    engine = Qwen2VLEngine(model)
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, batch_size=batch_size, check_every=2,
                                  min_shared_prefix=8)
    assert engine.generate(prompts, settings) == expected
    assert engine.stats["prefix_tokens_reused"] > 0  # each user's context was prefilled once and reused
    unshared = [Prompt(p.token_ids, p.images, None) for p in prompts]
    assert Qwen2VLEngine(model).generate(unshared, settings) == expected
    if batch_size == 64:
        assert engine.stats["compactions"] >= 1  # finished rows were dropped from the running batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: only there is the decode step replayed from a CUDA graph")
@pytest.mark.parametrize("penalty", [1.0, 1.05, 1.5])
def test_graph_replayed_decoding_on_cuda_matches_generate_with_and_without_a_penalty(tiny, penalty, monkeypatch):
    """The CPU tests run the decode step eagerly; on a GPU it is captured once and replayed, so the
    penalty's seen-token masks must live in the graph's static tensors and move with compaction.
    cuDNN's TF32 is off: generate's patch embedding is a Conv3d, which cuDNN runs in TF32 by default,
    while the engine's is a float32 matrix product; on the H200 that alone flipped one of six outputs."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model, processor = tiny
    gpu = copy.deepcopy(model).to("cuda")
    prompts, expected, eos = make_workload(gpu, processor, penalty=penalty)
    engine = Qwen2VLEngine(gpu)
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, repetition_penalty=penalty, check_every=2)
    assert engine.generate(prompts, settings) == expected
    assert engine.stats["graph_captures"] >= 2 and engine.stats["compactions"] >= 1  # a smaller batch replayed too


def test_a_strong_repetition_penalty_changes_the_outputs(tiny, workload):
    """So that the penalty tests below compare something the penalty decides."""
    model, _ = tiny
    prompts, plain, eos = workload  # generate's outputs without a penalty
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, repetition_penalty=1.5)
    assert Qwen2VLEngine(model).generate(prompts, settings) != plain


def _texts(i: int):
    """``encode``'s arguments for the workload's prompt ``i`` (unshared)."""
    user, t = divmod(i, 3)
    context = f"User {user} likes " + "warm red light and soft shapes, " * (2 + 3 * user)
    return context, f" Target {t}" + "?" * t, [10 * user + t, 10 * user + t + 5]


def test_repetition_penalty_matches_transformers_one_prompt_at_a_time(tiny, penalized):
    model, _ = tiny
    penalty, (prompts, expected, eos) = penalized
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, repetition_penalty=penalty, batch_size=1)
    assert Qwen2VLEngine(model).generate(prompts, settings) == expected


@pytest.mark.parametrize("batch_size", [2, 64])
def test_repetition_penalty_matches_transformers_batched_shared_and_compacted(tiny, penalized, batch_size):
    """Each row's seen ids come from its own prompt (shared prefix or not) and move with it when compacted."""
    model, _ = tiny
    penalty, (prompts, expected, eos) = penalized
    engine = Qwen2VLEngine(model)
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, repetition_penalty=penalty,
                                  batch_size=batch_size, check_every=2, min_shared_prefix=8)
    assert engine.generate(prompts, settings) == expected
    assert engine.stats["prefix_tokens_reused"] > 0
    if batch_size == 64:
        assert engine.stats["compactions"] >= 1
    one = GenerationSettings(max_new_tokens=1, eos_token_ids=eos, repetition_penalty=penalty)  # the prefill's token alone
    assert Qwen2VLEngine(model).generate(prompts, one) == [e[:1] for e in expected]


def test_repetition_penalty_masks_move_with_their_rows_when_a_batch_is_compacted(tiny):
    """The two shortest prompts (the batch's first rows) stop early; the other two then decode many
    steps in the first rows of a smaller batch, each with the seen ids it carried there."""
    model, processor = tiny
    n = 32
    items = [encode(processor, "A user likes " + "warm red light, " * (2 + 2 * k), f" Target {k}", [k]) for k in range(4)]
    full = [model.generate(**b, max_new_tokens=n, do_sample=False, repetition_penalty=1.5)[0, b["input_ids"].shape[1]:].tolist()
            for _, b in items]
    late = set(full[2] + full[3])
    eos = next((full[0][j], full[1][j]) for j in range(1, 5) if not {full[0][j], full[1][j]} & late)
    expected = [out[: min([out.index(t) for t in eos if t in out], default=n)] for out in full]
    assert [len(e) < 5 for e in expected] == [True, True, False, False]
    engine = Qwen2VLEngine(model)
    settings = GenerationSettings(max_new_tokens=n, eos_token_ids=eos, repetition_penalty=1.5, check_every=2)
    assert engine.generate([p for p, _ in items], settings) == expected
    assert engine.stats["compactions"] == 1


def test_the_penalty_op_is_transformers_repetition_penalty_on_negative_and_positive_logits():
    """The tiny model's greedy outputs never hinge on a seen id with a negative logit: compare the op itself."""
    from transformers import RepetitionPenaltyLogitsProcessor

    from pigbench.fastgen.decode_step import apply_repetition_penalty

    torch.manual_seed(0)
    logits, ids = torch.randn(3, 50), torch.randint(0, 50, (3, 7))
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, ids, True)
    want = RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone())
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.3), want)


def test_the_prefills_token_is_seen_by_the_decode_steps(tiny, workload, monkeypatch):
    """Each row's mask handed to the decode steps holds its prompt's ids and its first generated token."""
    model, _ = tiny
    prompts, _, eos = workload
    engine, handed = Qwen2VLEngine(model), []
    decode = engine._decode
    monkeypatch.setattr(engine, "_decode", lambda ws, first, plans, settings, seen: handed.append((first, seen.clone()))
                        or decode(ws, first, plans, settings, seen))
    engine.generate(prompts[:1], GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, repetition_penalty=1.5))
    (first, seen), = handed
    vocab = seen.shape[1]  # ids past the LM head's vocabulary (never generated) are left out
    assert seen[0].nonzero().flatten().tolist() == sorted({t for t in prompts[0].token_ids if t < vocab} | {first.item()})


def test_one_engine_decoding_with_another_penalty_does_not_reuse_the_first_penalty_s_workspace(tiny, penalized):
    model, _ = tiny
    penalty, (prompts, expected, eos) = penalized
    engine = Qwen2VLEngine(model)
    engine.generate(prompts, GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos))
    assert engine.generate(prompts, GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, repetition_penalty=penalty)) == expected


@pytest.mark.parametrize("penalty", [0.0, -1.0, float("nan")])
def test_a_repetition_penalty_that_is_not_positive_is_refused(tiny, workload, penalty):
    model, _ = tiny
    with pytest.raises(ValueError, match="repetition_penalty must be positive"):
        Qwen2VLEngine(model).generate(workload[0][:1], GenerationSettings(max_new_tokens=2, repetition_penalty=penalty))


def test_repetition_penalty_with_min_new_tokens_matches_transformers(tiny, penalized):
    """The penalty comes before min_new_tokens' EOS suppression, in the prefill and in the decode steps."""
    model, processor = tiny
    penalty, (prompts, expected, eos) = penalized
    batch = encode(processor, *_texts(0))[1]
    out = Qwen2VLEngine(model).generate(prompts[:1], GenerationSettings(NEW, NEW, eos, repetition_penalty=penalty))
    assert len(out[0]) == NEW and out[0] == reference(model, batch, eos, min_new=NEW, penalty=penalty)
    first = (expected[0][0],)  # generate's first token, now an EOS: suppressed at min_new_tokens=1
    want = reference(model, batch, first, min_new=1, penalty=penalty)
    assert want and want[0] != first[0]
    assert Qwen2VLEngine(model).generate(prompts[:1], GenerationSettings(NEW, 1, first, repetition_penalty=penalty)) == [want]


def test_min_new_tokens_fixes_the_length_like_transformers(tiny, workload):
    model, processor = tiny
    prompts, expected, eos = workload
    _, batch = encode(processor, "User 0 likes " + "warm red light and soft shapes, " * 2, " Target 0", [0, 5])
    out = Qwen2VLEngine(model).generate(prompts[:1], GenerationSettings(NEW, NEW, eos))
    assert len(out[0]) == NEW and out[0] == reference(model, batch, eos, min_new=NEW)


def test_one_new_token_is_generate_s_first_token_and_an_eos_first_token_gives_none(tiny, workload):
    """max_new_tokens=1 takes the prefill's token alone (no decode step); an EOS there is cut like any EOS."""
    model, _ = tiny
    prompts, expected, _ = workload
    firsts = [e[0] for e in expected]  # generate's first token of each prompt
    eos = (firsts[0],)
    out = Qwen2VLEngine(model).generate(prompts, GenerationSettings(max_new_tokens=1, eos_token_ids=eos))
    assert out == [[] if t in eos else [t] for t in firsts] and out[0] == [] and any(out)


def test_rows_prefilled_in_separate_chunks_match_transformers(tiny, workload):
    """A small prefill_tokens puts each row's suffix in its own prefill forward, into its own cache row."""
    model, _ = tiny
    prompts, expected, eos = workload
    engine = Qwen2VLEngine(model)
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, prefill_tokens=1, min_shared_prefix=8)
    assert engine.generate(prompts, settings) == expected
    assert engine.stats["prefix_tokens_reused"] > 0


def test_identical_prompts_sharing_a_key_each_keep_a_token_of_their_own(tiny, workload):
    """The shared prefix stops one token short of a prompt that is all prefix: its last token gives the logits."""
    model, _ = tiny
    prompts, expected, eos = workload
    twice = [Prompt(prompts[0].token_ids, prompts[0].images, "same")] * 2
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, min_shared_prefix=8)
    engine = Qwen2VLEngine(model)
    assert engine.generate(twice, settings) == [expected[0]] * 2
    assert engine.stats["prefix_tokens_reused"] == 2 * (len(prompts[0].token_ids) - 1)


def test_one_engine_serves_a_longer_prompt_after_a_short_one(tiny, workload):
    """The KV cache of the first call is too short for the second: the engine allocates a longer one."""
    model, processor = tiny
    prompts, expected, eos = workload
    long_prompt, batch = encode(processor, "warm red light and soft shapes, " * 40, " Target?", [3])
    engine = Qwen2VLEngine(model)
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos)
    assert engine.generate(prompts[:1], settings) == expected[:1]
    assert len(long_prompt.token_ids) > engine._k_cache.shape[3]
    assert engine.generate([long_prompt], settings) == [reference(model, batch, eos)]


def test_min_new_tokens_lets_eos_end_the_output_at_exactly_that_length(tiny, workload):
    """EOS is suppressed for the first min_new_tokens tokens only, as transformers does."""
    model, processor = tiny
    prompts, expected, eos = workload
    i = min(range(len(prompts)), key=lambda k: len(expected[k]))  # its EOS comes early
    user, t = divmod(i, 3)
    context = f"User {user} likes " + "warm red light and soft shapes, " * (2 + 3 * user)
    _, batch = encode(processor, context, f" Target {t}" + "?" * t, [10 * user + t, 10 * user + t + 5])
    m = len(expected[i])  # EOS is the (m+1)-th token: allowed at min_new_tokens=m
    assert 0 < m < NEW - 2 and reference(model, batch, eos, min_new=m) == expected[i]
    out = Qwen2VLEngine(model).generate(prompts[i : i + 1], GenerationSettings(NEW, m, eos, check_every=2))
    assert out == [expected[i]]


def test_min_new_tokens_of_one_suppresses_an_eos_first_token_like_transformers(tiny, workload):
    """The first token comes from the prefill, which must suppress EOS too."""
    model, processor = tiny
    prompts, expected, _ = workload
    eos = (expected[0][0],)  # generate's first token for prompt 0, now an EOS
    _, batch = encode(processor, "User 0 likes " + "warm red light and soft shapes, " * 2, " Target 0", [0, 5])
    want = reference(model, batch, eos, min_new=1)
    assert want and want[0] != eos[0]
    assert Qwen2VLEngine(model).generate(prompts[:1], GenerationSettings(NEW, 1, eos)) == [want]


def test_prompts_with_equal_text_but_different_images_share_only_the_text_before_them(tiny):
    """Same tokens, same-size images of different pixels: the KV from the first image on is each prompt's own."""
    model, processor = tiny
    first, batch = encode(processor, "A user likes " + "warm red light, " * 4, " Which?", [0])
    _, other = encode(processor, "A user likes " + "warm red light, " * 4, " Which?", [6])  # also 28x28
    second = Prompt(first.token_ids, (ImageInput(("img", 6), other["pixel_values"], first.images[0].grid_thw),), 0)
    expected = [reference(model, batch), reference(model, {**batch, "pixel_values": other["pixel_values"]})]
    assert expected[0] != expected[1]
    engine = Qwen2VLEngine(model)
    out = engine.generate([Prompt(first.token_ids, first.images, 0), second],
                          GenerationSettings(max_new_tokens=NEW, min_shared_prefix=8))
    assert out == expected and engine.stats["prefix_tokens_reused"] > 0


def test_engine_recovers_from_running_out_of_memory_for_the_kv_cache(tiny, workload, monkeypatch):
    """K allocated, V out of memory: the next (e.g. the backend's halved) call allocates both again."""
    model, _ = tiny
    prompts, expected, eos = workload
    engine = Qwen2VLEngine(model)
    zeros, made = torch.zeros, []

    def k_only(shape, *args, **kwargs):
        if len(shape) == 5:
            made.append(shape)
            if len(made) == 2:
                raise RuntimeError("CUDA out of memory")
        return zeros(shape, *args, **kwargs)

    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=eos, batch_size=4)
    monkeypatch.setattr(torch, "zeros", k_only)
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.generate(prompts, settings)
    monkeypatch.setattr(torch, "zeros", zeros)
    assert engine.generate(prompts[:2], settings) == expected[:2]


def test_engine_refuses_a_model_it_does_not_reproduce(tiny):
    """Qwen2.5-VL's vision tower (windowed attention) is not Qwen2-VL's: a one-line error, no traceback."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = tiny[0].config
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=config.text_config.hidden_size,
                  window_size=112, fullatt_block_indexes=[1])
    other = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=config.text_config.to_dict(), vision_config=vision, image_token_id=config.image_token_id,
        video_token_id=config.video_token_id))
    with pytest.raises(ValueError, match="Qwen2-VL models .* only; .* model_type 'qwen2_5_vl'"):
        Qwen2VLEngine(other)


def test_fast_backend_matches_local_backend_and_isolates_a_bad_image(tiny):
    from pigbench.fastgen.backend import FastLocalBackend
    from pigbench.judging.backend import GenerationParams
    from pigbench.judging.local_backend import LocalBackend
    from pigbench.judging.messages import ImagePolicy
    from pigbench.judging.messages import Prompt as ChatPrompt
    from pigbench.judging.messages import image, text
    from pigbench.protocol import ImageRef

    model, processor = tiny

    def ref(seed):
        buf = io.BytesIO()
        picture(seed, (56, 28)).save(buf, format="PNG")
        return ImageRef(f"img{seed}", buf.getvalue())

    broken = ImageRef("broken", b"not an image")
    prompts = [ChatPrompt((text(f"Prompt {k}: compare"), image(ref(k)), text("and"), image(ref(k + 1)))) for k in range(3)]
    prompts.insert(1, ChatPrompt((text("broken"), image(broken))))
    params = GenerationParams(max_new_tokens=NEW, images=ImagePolicy(max_pixels=56 * 56))
    fast = FastLocalBackend(model, processor, batch_size=4).generate(prompts, params)
    slow = LocalBackend(model, processor, batch_size=1).generate(prompts, params)
    assert "broken" in fast[1].error and fast[1].text is None
    assert [g.text for g in fast] == [g.text for g in slow]
    assert all(g.text for i, g in enumerate(fast) if i != 1)


def test_fast_backend_reports_truncation_like_local_backend(tiny, monkeypatch):
    from pigbench.fastgen.backend import FastLocalBackend
    from pigbench.judging.backend import GenerationParams
    from pigbench.judging.local_backend import LocalBackend
    from pigbench.judging.messages import Prompt as ChatPrompt
    from pigbench.judging.messages import text

    model, processor = tiny
    prompts = [ChatPrompt((text(f"Prompt {k}: describe a fox"),)) for k in range(3)]
    params = GenerationParams(max_new_tokens=NEW)
    slow = LocalBackend(model, processor, batch_size=1)
    ids = model.generate(**slow.encode(prompts[:1], params.images), max_new_tokens=NEW, do_sample=False)[0, -NEW:]
    monkeypatch.setattr(model.generation_config, "eos_token_id", int(ids[NEW // 2]))  # prompt 0 now stops early
    fast = FastLocalBackend(model, processor, batch_size=4).generate(prompts, params)
    local = slow.generate(prompts, params)
    assert [g.truncated for g in fast] == [g.truncated for g in local]
    assert not fast[0].truncated and any(g.truncated for g in fast)


def test_fast_backend_applies_the_checkpoint_s_repetition_penalty_like_local_backend(tiny, monkeypatch):
    """generate applies generation_config.repetition_penalty even when greedy; so does the engine (None: 1.0)."""
    from pigbench.fastgen.backend import FastLocalBackend
    from pigbench.judging.backend import GenerationParams
    from pigbench.judging.local_backend import LocalBackend
    from pigbench.judging.messages import Prompt as ChatPrompt
    from pigbench.judging.messages import text

    model, processor = tiny
    prompts = [ChatPrompt((text(f"Prompt {k}: describe a fox"),)) for k in range(3)]
    params = GenerationParams(max_new_tokens=NEW)
    monkeypatch.setattr(model.generation_config, "repetition_penalty", None)
    plain = FastLocalBackend(model, processor, batch_size=4)
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.5)
    fast = FastLocalBackend(model, processor, batch_size=4)
    texts = [g.text for g in fast.generate(prompts, params)]
    assert texts == [g.text for g in LocalBackend(model, processor, batch_size=1).generate(prompts, params)]
    assert texts != [g.text for g in plain.generate(prompts, params)]
    assert fast.provenance()["repetition_penalty"] == 1.5 and plain.provenance()["repetition_penalty"] == 1.0
    # CUDA graphs are captured only on a GPU: the provenance of a CPU run does not claim them
    assert fast.provenance()["generation"] == "pigbench.fastgen (greedy, static KV cache, no CUDA graphs on the CPU)"


@pytest.mark.parametrize("legacy", [False, True])
def test_lora_adapter_is_merged_on_load(tiny, tmp_path, legacy):
    """``legacy``: the adapter's keys as transformers < 4.52 named Qwen2-VL's modules (model.layers.*,
    visual.*), which peft did not rename under transformers 5: the adapter was not applied."""
    peft = pytest.importorskip("peft")
    from pigbench.fastgen.backend import FastLocalBackend
    from pigbench.lvlm_loader import load_lvlm

    model, processor = tiny
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    torch.manual_seed(1)
    lora = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "qkv"], init_lora_weights=False))  # random, non-zero
    lora.save_pretrained(tmp_path / "adapter")
    if legacy:
        _edit_weights(tmp_path / "adapter" / "adapter_model.safetensors", lambda sd: sd.update(
            {k.replace("model.language_model.", "model.").replace("model.visual.", "visual."): sd.pop(k) for k in list(sd)}))
    prompt, batch = encode(processor, "A user likes blue.", " Which?", [3, 4])
    with_adapter = reference(lora, batch)
    assert with_adapter != reference(model, batch)  # the adapter changes the output

    merged, loaded_processor = load_lvlm(str(tmp_path / "base"), "PIGReward", dtype="float32", adapter=str(tmp_path / "adapter"))
    backend = FastLocalBackend(merged, loaded_processor)
    assert backend.engine.generate([prompt], GenerationSettings(max_new_tokens=NEW)) == [with_adapter]


def _edit_weights(file, edit):
    from safetensors.torch import load_file, save_file

    state = load_file(str(file))
    edit(state)
    save_file(state, str(file), metadata={"format": "pt"})


def test_a_base_model_missing_a_tensor_is_one_checkpoint_error(tiny, tmp_path):
    """transformers only warned and left the tensor random: PIGReward answered with noise."""
    from pigbench.checkpoint import CheckpointError
    from pigbench.lvlm_loader import load_lvlm

    model, processor = tiny
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    _edit_weights(tmp_path / "base" / "model.safetensors", lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=rf"^the PIGReward model at '{re.escape(str(tmp_path / 'base'))}' does not match the model: "
                                              r"1 missing key\(s\) \['model.language_model.layers.1.mlp.up_proj.weight'\]"):
        load_lvlm(str(tmp_path / "base"), "PIGReward", dtype="float32")


def _saved_base_and_adapter(tiny, tmp_path) -> tuple:
    """The tiny model and processor saved to ``tmp_path/base``, a random q_proj LoRA of it to
    ``tmp_path/adapter``: (the adapter's weight file, the key of a layer-1 lora_A tensor in it)."""
    peft = pytest.importorskip("peft")
    from safetensors.torch import load_file

    model, processor = tiny
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    lora = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    file = tmp_path / "adapter" / "adapter_model.safetensors"
    return file, next(k for k in load_file(str(file)) if "layers.1." in k and "lora_A" in k)


def test_an_adapter_whose_keys_match_no_module_is_one_checkpoint_error(tiny, tmp_path):
    """PeftModel.from_pretrained ignored unmatched adapter tensors and only warned about absent ones:
    the LoRA was silently not applied to those modules."""
    from pigbench.checkpoint import CheckpointError
    from pigbench.lvlm_loader import load_lvlm

    file, key = _saved_base_and_adapter(tiny, tmp_path)
    _edit_weights(file, lambda sd: sd.__setitem__(key.replace("q_proj", "query"), sd.pop(key)))
    with pytest.raises(CheckpointError, match=rf"^the PIGReward adapter at '{re.escape(str(tmp_path / 'adapter'))}' does not match the model: "
                                              rf"1 missing key\(s\) .*layers\.1\.self_attn\.q_proj\.lora_A.*1 unexpected key\(s\) .*query"):
        load_lvlm(str(tmp_path / "base"), "PIGReward", dtype="float32", adapter=str(tmp_path / "adapter"))


@pytest.mark.parametrize("edit, message", [("drop", r"1 missing key\(s\) .*q_proj\.lora_A.*, 0 unexpected"),
                                           ("add", r"0 missing key\(s\) \[\], 1 unexpected key\(s\) .*query")])
def test_an_adapter_lacking_a_tensor_or_holding_an_extra_one_is_one_checkpoint_error(tiny, tmp_path, edit, message):
    """Each alone is an error too, not only both together."""
    from pigbench.checkpoint import CheckpointError
    from pigbench.lvlm_loader import load_lvlm

    file, key = _saved_base_and_adapter(tiny, tmp_path)
    _edit_weights(file, lambda sd: sd.pop(key) if edit == "drop" else sd.__setitem__(key.replace("q_proj", "query"), sd[key].clone()))
    with pytest.raises(CheckpointError, match=message):
        load_lvlm(str(tmp_path / "base"), "PIGReward", dtype="float32", adapter=str(tmp_path / "adapter"))


def test_an_adapter_config_that_is_not_json_is_one_checkpoint_error_naming_it(tiny, tmp_path):
    """PeftConfig's JSONDecodeError reached the user as 'error: Expecting value: line 1 column 1 (char 0)',
    naming no file."""
    from pigbench.checkpoint import CheckpointError
    from pigbench.lvlm_loader import load_lvlm

    _saved_base_and_adapter(tiny, tmp_path)
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(config.read_text()[:20])  # cut short
    with pytest.raises(CheckpointError, match=rf"^the PIGReward adapter at '{re.escape(str(tmp_path / 'adapter'))}' could not be "
                                              rf"read: {re.escape(str(config))} is not valid JSON \(.*\)$"):
        load_lvlm(str(tmp_path / "base"), "PIGReward", dtype="float32", adapter=str(tmp_path / "adapter"))


def test_a_truncated_adapter_file_is_one_checkpoint_error_naming_it(tiny, tmp_path):
    """safetensors' error for a cut adapter_model.safetensors named no file outside the runner (a
    library user's load, ``pigbench check-evaluator``); the runner's own catch named it."""
    from pigbench.checkpoint import CheckpointError
    from pigbench.lvlm_loader import load_lvlm

    file, _ = _saved_base_and_adapter(tiny, tmp_path)
    file.write_bytes(file.read_bytes()[:100])  # cut short
    with pytest.raises(CheckpointError, match=rf"^the PIGReward adapter at '{re.escape(str(tmp_path / 'adapter'))}' could not be "
                                              rf"read: the weight file {re.escape(str(file))} is damaged or truncated \(.+\); download it again$"):
        load_lvlm(str(tmp_path / "base"), "PIGReward", dtype="float32", adapter=str(tmp_path / "adapter"))


def test_an_adapter_trained_on_another_base_is_one_checkpoint_error_naming_both(tiny, tmp_path):
    """A LoRA of a base with another hidden size reached the user as torch's RuntimeError traceback
    (one 'size mismatch' line per tensor), naming neither the adapter nor the model."""
    peft = pytest.importorskip("peft")
    from pigbench.checkpoint import CheckpointError
    from pigbench.judging.random_models import QWEN2_VL_TINY
    from pigbench.lvlm_loader import load_lvlm

    model, processor = tiny
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    wider = copy.deepcopy(QWEN2_VL_TINY)
    wider["text"]["hidden_size"] = 96
    other, _ = qwen2_vl(shape=wider, seed=0)
    peft.get_peft_model(other, peft.LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    config_file = tmp_path / "adapter" / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": "org/wider-base"}))
    with pytest.raises(CheckpointError, match=rf"^the PIGReward adapter at '{re.escape(str(tmp_path / 'adapter'))}' does not "
                                              rf"fit the model at '{re.escape(str(tmp_path / 'base'))}': its tensors have other "
                                              r"shapes than that model's layers, so it was trained on another base model "
                                              r"\(its adapter_config.json names 'org/wider-base'\); give that base model "
                                              r"\(pass --option reward_path=DIR\)$"):
        load_lvlm(str(tmp_path / "base"), "PIGReward", dtype="float32", adapter=str(tmp_path / "adapter"),
                  model_flag="--option reward_path=")


def test_running_out_of_gpu_memory_merging_an_adapter_is_no_checkpoint_error(tiny, tmp_path, monkeypatch):
    """torch's OutOfMemoryError is a RuntimeError, as peft's shape mismatch is: it stays itself, not a message
    blaming the adapter for another base model."""
    from peft import PeftModel

    from pigbench.lvlm_loader import load_lvlm

    _saved_base_and_adapter(tiny, tmp_path)

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(PeftModel, "load_adapter", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="CUDA out of memory"):
        load_lvlm(str(tmp_path / "base"), "PIGReward", dtype="float32", adapter=str(tmp_path / "adapter"))


@pytest.mark.parametrize("dtype,device,expected", [
    ("auto", "cuda", torch.bfloat16), ("auto", "cuda:1", torch.bfloat16), ("auto", "cpu", torch.float32),
    ("float16", "cpu", torch.float16)])
def test_dtype_auto_is_bfloat16_on_any_cuda_device_and_float32_elsewhere(dtype, device, expected):
    from pigbench.lvlm_loader import torch_dtype

    assert torch_dtype(dtype, device) is expected
