"""The local transformers backend end to end, with tiny random Qwen2-VL and LLaVA-OneVision models
built from configs (no download): interleaving, pixel budget, left-padded batching, answer
probabilities, failure isolation, judges and the runner."""

import io
import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from pigbench.judging import random_models  # noqa: E402
from pigbench.judging.backend import Generation, GenerationParams  # noqa: E402
from pigbench.judging.local_backend import LocalBackend  # noqa: E402
from pigbench.judging.messages import ImagePolicy, Prompt, image, reference_prompt, text  # noqa: E402
from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target  # noqa: E402
from pigbench.registry import evaluators  # noqa: E402

pytestmark = pytest.mark.models


def png(name: str, size=(64, 48), seed: int = 0) -> ImageRef:
    buf = io.BytesIO()
    Image.new("RGB", size, (seed * 37 % 256, 90, 200 - seed % 200)).save(buf, format="PNG")
    return ImageRef(name, buf.getvalue())


def episode(n: int, k: int = 2, size=(64, 48)) -> Episode:
    refs = tuple(ReferencePair(f"reference prompt {n}.{i}", png(f"p{n}.{i}", size, 2 * i), png(f"r{n}.{i}", size, 2 * i + 1))
                 for i in range(k))
    return Episode(f"user{n}", refs, Target(f"s{n}", f"a fox number {n}", png(f"a{n}", size, 50 + n),
                                            png(f"b{n}", size, 90 + n), Label.INVALID))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run ~10x faster on one thread than on two contended cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def qwen():
    return LocalBackend(*random_models.qwen2_vl(), batch_size=4)


@pytest.fixture(scope="module")
def llava():
    return LocalBackend(*random_models.llava_onevision_tiny(), batch_size=4)


def layout(backend: LocalBackend, prompt: Prompt) -> str:
    """The model input as text, each run of image tokens shown as one <IMG>."""
    ids = backend.encode([prompt], ImagePolicy(max_pixels=56 * 56))["input_ids"][0]
    decoded = backend.tokenizer.decode(ids, skip_special_tokens=False)
    return re.sub(f"(?:{re.escape(backend.processor.image_token)})+", "<IMG>", decoded)


@pytest.mark.parametrize("name", ["qwen", "llava"])
def test_images_stay_interleaved_with_their_labels(name, request):
    backend = request.getfixturevalue(name)
    assert backend.interleaved == (name == "qwen")  # the LLaVA stand-in renders images first, like llava-hf
    seen = layout(backend, reference_prompt(episode(0)))
    labels = re.findall(r"(Preferred image:|Rejected image:|Image A:|Image B:)\s*(?:<\|vision_start\|>)?(<IMG>)", seen)
    assert [lab for lab, _ in labels] == ["Preferred image:", "Rejected image:"] * 2 + ["Image A:", "Image B:"]
    assert seen.count("<IMG>") == 6


def test_qwen_pixel_budget_sets_the_visual_token_count(qwen):
    prompt = Prompt((text("x"), image(png("big", (448, 448))), image(png("small", (56, 56)))))
    counts = {}
    for budget in (56 * 56, 112 * 112, 224 * 224):
        batch = qwen.encode([prompt], ImagePolicy(max_pixels=budget))
        grid = batch["image_grid_thw"]
        n_tokens = int((batch["input_ids"] == qwen.processor.image_token_id).sum())
        assert n_tokens == int(grid.prod(-1).sum()) // 4  # 2x2 patch merge
        assert int(grid[0].prod()) * 14 * 14 <= budget  # the 448x448 image is capped ...
        assert grid[1].tolist() == [1, 4, 4]  # ... the 56x56 one is not enlarged
        counts[budget] = n_tokens
    assert counts[56 * 56] < counts[112 * 112] < counts[224 * 224]
    assert counts[224 * 224] == 16 * 16 // 4 + 4  # 448x448 capped to 224x224: 16x16 patches = 64 tokens, + 4


def test_llava_multi_image_uses_base_tokens_per_image(llava):
    n = (llava.encode([reference_prompt(episode(0))], ImagePolicy())["input_ids"] == llava.processor.image_token_id).sum()
    assert int(n) == 6 * (4 + 1)  # 2x2 patches + newline per image when a sample has several images


@pytest.mark.parametrize("name", ["qwen", "llava"])
def test_left_padded_batch_equals_one_by_one(name, request):
    backend = request.getfixturevalue(name)
    prompts = [reference_prompt(episode(i, k=i)) for i in range(3)]  # different lengths
    params = GenerationParams(max_new_tokens=6, images=ImagePolicy(max_pixels=56 * 56))
    batched = backend.generate(prompts, params)
    single = [backend.generate([p], params)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.error is None and g.text for g in batched)


def test_min_new_tokens_fixes_the_length(qwen):
    params = GenerationParams(max_new_tokens=5, min_new_tokens=5, images=ImagePolicy(max_pixels=56 * 56))
    batch = qwen.encode([reference_prompt(episode(0))], params.images)
    out = qwen.model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                              pad_token_id=qwen.tokenizer.pad_token_id)
    assert out.shape[1] - batch["input_ids"].shape[1] == 5


def test_temperature_samples_despite_the_checkpoints_top_k(qwen, monkeypatch):
    """Qwen2-VL checkpoints ship top_k=1, top_p=0.001 in their generation config: temperature > 0
    must still sample (seeds give different outputs), not fall back to greedy."""
    monkeypatch.setattr(qwen.model.generation_config, "top_k", 1, raising=False)
    monkeypatch.setattr(qwen.model.generation_config, "top_p", 0.001, raising=False)
    prompt = reference_prompt(episode(0))
    texts = {qwen.generate([prompt], GenerationParams(max_new_tokens=8, temperature=1.0, seed=seed,
                                                      images=ImagePolicy(max_pixels=56 * 56)))[0].text
             for seed in range(3)}
    assert len(texts) > 1


def test_truncated_means_no_eos_within_max_new_tokens(qwen, monkeypatch):
    prompt = reference_prompt(episode(0))
    params = GenerationParams(max_new_tokens=6, images=ImagePolicy(max_pixels=56 * 56))
    ids = qwen.model.generate(**qwen.encode([prompt], params.images), max_new_tokens=6, do_sample=False,
                              pad_token_id=qwen.tokenizer.pad_token_id)[0, -6:].tolist()
    assert not qwen.stop_token_ids().intersection(ids)  # this random model runs to the limit
    assert qwen.generate([prompt], params)[0].truncated
    monkeypatch.setattr(qwen.model.generation_config, "eos_token_id", [ids[3]])  # its 4th token now ends it
    ended = qwen.generate([prompt, reference_prompt(episode(1))], params)[0]
    assert not ended.truncated and ended.error is None


def test_option_recorder_sums_variants_per_sequence_and_step():
    """Each row is one sequence's steps; an option's probability is the softmax mass of its token variants."""
    from pigbench.judging.local_backend import _OptionRecorder

    recorder = _OptionRecorder({"A": [0, 1], "B": [2]})
    for step in ([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]], [[0.5, 0.05, 0.25, 0.2]] * 2):
        recorder(None, (), (torch.tensor(step).log() + 7.0)[:, None])  # the output layer's logits (batch, 1, vocab), shifted
    got = [[{o: round(float(torch.tensor(v).exp()), 6) for o, v in s.items()} for s in seq] for seq in recorder.rows()]
    assert got == [[{"A": 0.3, "B": 0.3}, {"A": 0.55, "B": 0.25}], [{"A": 0.7, "B": 0.2}, {"A": 0.55, "B": 0.25}]]


def test_option_token_ids_cover_the_bare_and_the_spaced_token(qwen):
    """P(A) sums "A" and " A" ("<answer> A" is as much an answer as "<answer>A"); a multi-token
    option is refused."""
    enc = lambda s: qwen.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    assert qwen.option_token_ids(("A", "B"), "<answer>") == {o: sorted(enc(o) + enc(f" {o}")) for o in ("A", "B")}
    assert len({i for ids in qwen.option_token_ids(("A", "B"), "<answer>").values() for i in ids}) == 4
    with pytest.raises(ValueError, match="not a single token"):
        qwen.option_token_ids(("A", "Image A is better"), "<answer>")


def test_option_token_ids_include_a_token_merging_the_markers_end_with_the_option(qwen):
    """Qwen2's pre-tokenizer makes ">A" one piece of "<answer>A": where the vocabulary has it, the
    model answers with that token, and P(A) must count it (else it reads "A" at a step where the
    model chooses between ">A" and ">B")."""
    import copy

    tok = copy.deepcopy(qwen.tokenizer)
    tok.add_tokens([">A", ">B"])
    merged = copy.copy(qwen)
    merged.tokenizer = tok
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    assert enc(">A") != enc(">") + enc("A") and len(enc(">A")) == 1
    assert merged.option_token_ids(("A", "B"), "<answer>") == {
        o: sorted(enc(o) + enc(f" {o}") + enc(f">{o}")) for o in ("A", "B")}


def test_option_probabilities_follow_the_greedy_choice(qwen):
    """With the first generated token as the marker, the recorded distribution at the next step
    must put the greedy token above any other option."""
    params = GenerationParams(max_new_tokens=4, images=ImagePolicy(max_pixels=56 * 56))
    prompt = reference_prompt(episode(1))
    ids = qwen.model.generate(**qwen.encode([prompt], params.images), max_new_tokens=4, do_sample=False,
                              pad_token_id=qwen.tokenizer.pad_token_id)[0, -4:].tolist()
    first, second = (qwen.tokenizer.decode([t]) for t in ids[:2])
    other = next(t for t in ("q", "x") if t != second.strip())  # single bytes are single tokens
    if not first.strip() or len(qwen.tokenizer.encode(second.strip(), add_special_tokens=False)) != 1:
        pytest.skip("greedy tokens of this random model are not usable as single-token options")
    probed = GenerationParams(max_new_tokens=4, images=params.images, answer_marker=first.strip(),
                              options=(second.strip(), other))
    probs = qwen.generate([prompt], probed)[0].option_probs
    assert probs is not None and sum(probs.values()) == pytest.approx(1.0)
    assert probs[second.strip()] > probs[other]


def test_option_probabilities_are_read_before_the_checkpoint_s_repetition_penalty(qwen, monkeypatch):
    """They were read from generate's processed scores, after the checkpoint's repetition_penalty
    (1.05 in Qwen2-VL) had shrunk the logits of the prompt's "A" and "B": P(A) was pulled towards 0.5.
    They now come from the raw logits, as generate's own output_logits gives them."""
    monkeypatch.setattr(qwen.model.generation_config, "repetition_penalty", 3.0)
    params = GenerationParams(max_new_tokens=4, images=ImagePolicy(max_pixels=56 * 56))
    prompt = reference_prompt(episode(1))
    out = qwen.model.generate(**qwen.encode([prompt], params.images), max_new_tokens=4, do_sample=False,
                              pad_token_id=qwen.tokenizer.pad_token_id, output_logits=True, output_scores=True,
                              return_dict_in_generate=True)
    first = qwen.tokenizer.decode([out.sequences[0, -4]]).strip()
    if not first:
        pytest.skip("the first greedy token of this random model is not usable as a marker")
    ids = qwen.option_token_ids(("A", "B"), first)

    def option_probs(step_logits):
        logp = torch.log_softmax(step_logits[0].float(), -1)
        mass = {o: float(torch.logsumexp(logp[i], -1).exp()) for o, i in ids.items()}
        return {o: m / sum(mass.values()) for o, m in mass.items()}

    want, penalized = option_probs(out.logits[1]), option_probs(out.scores[1])
    assert abs(want["A"] - penalized["A"]) > 1e-3  # the penalty moves them: the test tells the two apart
    got = qwen.generate([prompt], GenerationParams(max_new_tokens=4, images=params.images, answer_marker=first,
                                                   options=("A", "B")))[0].option_probs
    assert got == pytest.approx(want, abs=1e-5)
    assert not qwen.model.get_output_embeddings()._forward_hooks  # the recorder is removed after its call


def test_unreadable_image_fails_only_its_prompt(qwen):
    broken = Episode("u", (), Target("bad", "p", ImageRef("corrupt.png", b"not an image"), png("ok"), Label.INVALID))
    gens = qwen.generate([reference_prompt(episode(0)), reference_prompt(broken)],
                         GenerationParams(max_new_tokens=3, images=ImagePolicy(max_pixels=56 * 56)))
    assert gens[0].error is None and gens[0].text
    assert gens[1].text is None and "corrupt.png" in gens[1].error



@pytest.mark.parametrize("size", [(1, 400), (600, 2)])
def test_an_image_the_processor_refuses_fails_only_its_prompt_naming_it(qwen, size):
    """Qwen2-VL's processor refuses an aspect ratio of 200 or more for the whole prompt; the failure
    said so without naming which of its six images it was."""
    thin = Episode("u", (), Target("thin", "p", png("ok"), png("thin-one.png", size), Label.INVALID))
    gens = qwen.generate([reference_prompt(episode(0)), reference_prompt(thin)],
                         GenerationParams(max_new_tokens=3, images=ImagePolicy(max_pixels=56 * 56)))
    assert gens[0].error is None and gens[0].text
    assert gens[1].text is None
    assert re.fullmatch(rf"ImageError: image 'thin-one.png' \({size[0]}x{size[1]}\): ValueError: absolute aspect ratio "
                        r"must be smaller than 200, got \d+\.0", gens[1].error)

@pytest.mark.parametrize("name, fixture", [("qwen2-vl-judge", "qwen"), ("llava-ov-judge", "llava"),
                                           ("unifiedreward", "qwen"), ("unifiedreward-think", "qwen")])
def test_judges_turn_garbage_into_invalid_with_raw_text(name, fixture, request):
    cls = evaluators.get(name)
    small = {"image_size": 56} if cls.Config().image_size else {}
    judge = cls(cls.Config(max_new_tokens=8, **small))
    judge.backend = request.getfixturevalue(fixture)
    preds = judge.predict([episode(i) for i in range(3)])
    assert [p.sample_id for p in preds] == ["s0", "s1", "s2"]
    for p in preds:
        assert p.raw_text and p.error is None
        assert p.label == judge.parse(Generation(p.raw_text, truncated=p.extra.get("truncated", False))).label
        assert p.label == Label.INVALID and p.extra["invalid_reason"]


def test_a_truncated_safetensors_file_is_one_requirement_error(tmp_path, qwen):
    """transformers raises safetensors' own error (no OSError): it reached the user as a traceback."""
    from pigbench.evaluator import RequirementError
    from pigbench.runner import RunConfig, run

    qwen.model.save_pretrained(tmp_path / "model")
    qwen.processor.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(RequirementError, match=rf"^the judge model at {re.escape(repr(str(tmp_path / 'model')))} could not be read: the weight file {re.escape(str(weights))} is damaged or truncated \(Error while deserializing"):
        run(RunConfig(evaluator="qwen2-vl-judge", dataset="toy", model_path=str(tmp_path / "model"), limit=2,
                      output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), progress=False))


def _edit_weights(folder, edit):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("lm_head.weight"), r"1 missing key\(s\) \['lm_head.weight'\], 0 unexpected"),
    (lambda sd: sd.pop("visual.blocks.0.attn.qkv.weight"), r"1 missing key\(s\) \['model.visual.blocks.0.attn.qkv.weight'\]"),
    (lambda sd: sd.__setitem__("bogus.weight", torch.zeros(2)), r"0 missing key\(s\) \[\], 1 unexpected key\(s\) \['bogus.weight'\]"),
])
def test_a_judge_checkpoint_missing_or_adding_a_tensor_is_one_checkpoint_error(tmp_path, qwen, edit, message):
    """transformers only warned and left the missing weights random: the judge answered with noise."""
    from pigbench.checkpoint import CheckpointError

    qwen.model.save_pretrained(tmp_path / "model")
    qwen.processor.save_pretrained(tmp_path / "model")
    _edit_weights(tmp_path / "model", edit)
    with pytest.raises(CheckpointError, match=rf"^the judge model at {re.escape(repr(str(tmp_path / 'model')))} does not match the model: {message}"):
        LocalBackend.from_pretrained(str(tmp_path / "model"))


@pytest.mark.parametrize("missing, message", [
    ("model.safetensors", "no weight file (model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
                          "pytorch_model.bin.index.json) in the folder"),
    ("processor_config.json", "no image processor config (processor_config.json or preprocessor_config.json) in the folder"),
    ("tokenizer.json", "no tokenizer vocabulary (tokenizer.json, vocab.json and merges.txt, tokenizer.model, spiece.model, "
                       "sentencepiece.bpe.model or vocab.txt) in the folder"),
    ("tokenizer_config.json", "tokenizer_config.json not found in the folder"),
    ("chat_template.jinja", "no chat template (chat_template.jinja or chat_template.json) in the folder"),
])
def test_a_judge_model_folder_without_weights_or_processor_files_is_one_line_saying_what_to_do(tmp_path, qwen, missing, message):
    """transformers said "Error no file named model.safetensors ..." or, for the processor, a long
    message pointing at huggingface.co; without tokenizer.json it built Qwen2's tokenizer class with
    one token (every prompt encoded to nothing), without tokenizer_config.json it took that class's
    EOS (<|endoftext|>, not the folder's <|im_end|>), and without the chat template the judge failed
    later in apply_chat_template. Each now says what is missing, which repo to download whole and
    which flag points to it."""
    from pigbench.checkpoint import CheckpointError

    folder = tmp_path / "model"
    qwen.model.save_pretrained(folder)
    qwen.processor.save_pretrained(folder)
    (folder / missing).unlink()
    cls = evaluators.get("qwen2-vl-judge")
    judge = cls(cls.Config(model_path=str(folder)))
    with pytest.raises(CheckpointError) as info:
        judge.setup()
    assert str(info.value) == (f"the judge model at {str(folder)!r} is incomplete: {message}; download the whole model "
                               "folder (`hf download Qwen/Qwen2-VL-7B-Instruct --local-dir DIR`), then pass --model-path DIR")


def test_a_complete_folder_that_fails_to_load_for_another_reason_keeps_transformers_error(tmp_path, monkeypatch):
    """A folder holding one of the accepted weight (or processor) files, and its tokenizer files, is not
    called incomplete when from_pretrained fails for another reason: that error is raised as is."""
    import transformers

    from pigbench.checkpoint import from_pretrained_strict, load_processor

    for name in ("config.json", "model.safetensors", "processor_config.json",  # one of each kind's names
                 "tokenizer_config.json", "tokenizer.json"):
        (tmp_path / name).write_text("{}")

    def other_failure(*args, **kwargs):
        raise OSError("video_preprocessor_config.json not found")

    class Model:
        from_pretrained = staticmethod(other_failure)

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", other_failure)
    for load in (lambda: from_pretrained_strict(Model, str(tmp_path), "the judge model", "hint"),
                 lambda: load_processor(str(tmp_path), "the judge model", "hint")):
        with pytest.raises(OSError, match="^video_preprocessor_config.json not found$"):
            load()


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("name", ["qwen", "llava"])
def test_a_clean_judge_checkpoint_loads_strictly_with_its_weights(tmp_path, request, name, tied):
    """A clean save reports no key (tied lm_head, buffers, Qwen2-VL's renamed legacy keys), and every weight is loaded."""
    model = request.getfixturevalue(name).model
    if tied:  # a checkpoint without lm_head.weight, as tie_word_embeddings checkpoints are saved
        config = model.config.__class__.from_dict({**model.config.to_dict(), "tie_word_embeddings": True})
        torch.manual_seed(0)
        model = type(model)(config).eval()
    model.save_pretrained(tmp_path / "model")
    request.getfixturevalue(name).processor.save_pretrained(tmp_path / "model")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as f:
        assert any(key.endswith("lm_head.weight") for key in f.keys()) is not tied
    loaded = LocalBackend.from_pretrained(str(tmp_path / "model")).model
    saved = model.state_dict()
    assert loaded.state_dict().keys() == saved.keys()
    assert all(torch.equal(value, saved[key]) for key, value in loaded.state_dict().items())


def test_runner_loads_a_saved_model_and_swaps(tmp_path, qwen):
    from pigbench.runner import RunConfig, run

    qwen.model.save_pretrained(tmp_path / "model")
    qwen.processor.save_pretrained(tmp_path / "model")
    out = run(RunConfig(evaluator="qwen2-vl-judge", dataset="toy", model_path=str(tmp_path / "model"), limit=4,
                        batch_size=2, swap=True, options={"max_new_tokens": "4"}, output=str(tmp_path / "results"),
                        cache_dir=str(tmp_path / "cache"), progress=False, n_bootstrap=10))
    assert out.results["evaluator"]["models"]["model_type"] == "qwen2_vl"
    rows = [json.loads(line) for line in out.results_path.with_name(out.results_path.stem + ".predictions.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        swap = row["prediction"]["extra"]["swap"]
        assert swap["raw_first"] and swap["raw_second"]
        assert row["prediction"]["label"] == "INVALID"


def test_a_judge_folder_whose_tokenizer_config_names_a_serialized_tokenizer_needs_its_tokenizer_json(tmp_path, qwen):
    """tokenizer_config.json names TokenizersBackend (built only from tokenizer.json): without that file
    transformers raised a five-line "Couldn't instantiate the backend tokenizer" ValueError even with
    vocab.json and merges.txt beside it; now one line names tokenizer.json."""
    from pigbench.checkpoint import CheckpointError

    folder = tmp_path / "model"
    qwen.model.save_pretrained(folder)
    qwen.processor.save_pretrained(folder)
    serialized = json.loads((folder / "tokenizer.json").read_text())["model"]
    (folder / "vocab.json").write_text(json.dumps(serialized["vocab"]))
    (folder / "merges.txt").write_text("\n".join(" ".join(pair) if isinstance(pair, list) else pair
                                                 for pair in serialized["merges"]))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError) as info:
        LocalBackend.from_pretrained(str(folder), hint="HINT")
    assert str(info.value) == (f"the judge model at {str(folder)!r} is incomplete: tokenizer.json not found in the folder "
                               "(tokenizer_config.json names TokenizersBackend, which is built from it); HINT")
