"""PIGReward end to end through the runner: the user context is computed once per user and survives
a killed run, replies are parsed into labels, dimensions, violations and contradictions, ablations
change the prompts, and the real loading path runs a tiny random Qwen2-VL for both parts."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from pigbench.evaluator import RequirementError
from pigbench.evaluators.pigreward import PIGReward
from pigbench.pigreward.config import PIGRewardConfig
from pigbench.judging.backend import Backend, Generation
from pigbench.pigreward.prompts import REASONER_INSTRUCTION
from pigbench.registry import evaluators
from pigbench.runner import RunConfig, run


def run_config(tmp_path: Path, **kw) -> RunConfig:
    base = dict(evaluator="pigreward", dataset="toy", dataset_options={"users": "5", "records": "5"},
                reference_size=2, batch_size=2, output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"),
                progress=False, n_bootstrap=50)
    base.update(kw)
    return RunConfig(**base)


def rows(outcome) -> list[dict]:
    path = outcome.results_path.with_name(outcome.results_path.name[: -len(".json")] + ".predictions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def valid(answer: str, scores: list[tuple[int, int]], totals=None) -> str:
    dims = [{"name": f"d{k}", "definition": f"def {k}", "score_a": a, "score_b": b, "justification": f"j{k}"}
            for k, (a, b) in enumerate(scores)]
    total_a, total_b = totals or (sum(a for a, _ in scores), sum(b for _, b in scores))
    return json.dumps({"dimensions": dims, "total_a": total_a, "total_b": total_b, "answer": answer})


REPLIES = {  # one kind of reply per target, chosen by a hash of the target prompt
    0: valid("A", [(8, 3), (7, 4), (9, 2)]),
    1: valid("B", [(8, 3), (7, 4), (9, 2)]),  # answer contradicts the totals
    2: "Sure! " + valid("B", [(3, 8), (4, 7)], totals=(7, 16)),  # 2 dims, wrong total, prose outside
    3: "I think the user likes image A.",  # unparseable
}


def kind(prompt_text: str) -> int:
    return hashlib.sha256(prompt_text.encode()).digest()[0] % 4


class ScriptedModel(Backend):
    """Stands in for the shared Qwen2-VL of both parts: rationales for reasoner prompts, the reply
    of :data:`REPLIES` for reward prompts. Counts reasoner prompts; can simulate a kill."""

    def __init__(self, kill_on_reward: bool = False) -> None:
        self.reasoner_prompts = 0
        self.reward_prompts: list = []
        self.kill_on_reward = kill_on_reward

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            texts = [x.value for x in p.parts if x.type == "text"]
            if REASONER_INSTRUCTION in texts:
                self.reasoner_prompts += 1
                out.append(Generation(f"Likes {texts[0][:30]}"))
                continue
            if self.kill_on_reward:
                raise KeyboardInterrupt  # like a SIGINT after the contexts were stored
            self.reward_prompts.append(p)
            target = next(t for t in texts if t.startswith("The user now asked for"))
            out.append(Generation(REPLIES[kind(target)]))
        return out

    def provenance(self):
        return {"model": "scripted"}


@pytest.fixture
def scripted(monkeypatch):
    """Runs use a ScriptedModel (``holder[0]``) instead of loading Qwen2-VL."""
    holder = [ScriptedModel()]
    monkeypatch.setattr(PIGReward, "check_requirements", classmethod(lambda cls, config: None))
    monkeypatch.setattr(PIGReward, "make_backends", lambda self: {(m, a): holder[0] for m, a, _ in self.config.parts()})
    return holder


def test_registered_as_a_reasoning_evaluator_using_references():
    cls = evaluators.get("pigreward")
    assert cls is PIGReward and cls.kind == "reasoning" and cls.uses_references


def test_runner_parses_valid_invalid_and_inconsistent_replies(tmp_path, scripted):
    out = run(run_config(tmp_path))
    model = scripted[0]
    assert out.results["metrics"]["n"] == 15
    assert model.reasoner_prompts == 5 * 2  # 5 users x 2 references, once each (their targets span batches)
    seen: list[int] = []
    for row in rows(out):
        pred = row["prediction"]
        k = next(k for k, text in REPLIES.items() if text == pred["raw_text"])
        seen.append(k)
        extra = pred["extra"]
        if k == 3:
            assert pred["label"] == "INVALID" and extra["invalid_reason"] == "no JSON object in the reply"
            assert "error" not in pred  # the model answered: not a failure
            continue
        assert pred["label"] == ("A" if k == 0 else "B")
        assert extra["contradicts_totals"] == (k == 1)
        assert [d["name"] for d in pred["dimensions"]] == ["d0", "d1", "d2"][: 3 if k < 2 else 2]
        assert {"score_a", "score_b", "definition"} <= set(pred["dimensions"][0])
        # score_a/score_b are the sums of the dimension scores, not the written totals (7, 16 for k == 2)
        assert (pred["score_a"], pred["score_b"]) == ((7, 15) if k == 2 else (24, 9))
        expected = ["text outside the JSON object", "2 dimensions, at least 3 required",
                    "total_b=16 but the scores sum to 15"] if k == 2 else []
        assert extra["format_violations"] == expected
    assert set(seen) == {0, 1, 2, 3}  # every kind of reply occurred
    assert out.results["answer_quality"] == {  # replies counted once each, however many violations they have
        "unparseable": seen.count(3), "unparseable_reasons": {"no JSON object in the reply": seen.count(3)},
        "format_violations": seen.count(2), "contradicts_totals": seen.count(1)}
    assert {p.parts[2].value for p in model.reward_prompts} == {
        f'The user now asked for: "{t}"' for t in _target_prompts(tmp_path)}


def _target_prompts(tmp_path: Path) -> set[str]:
    from pigbench.runner import load_split

    return {e.target.prompt for e in load_split(run_config(tmp_path))[1].episodes}


def test_contexts_survive_a_killed_run_and_a_resumed_run_reuses_them(tmp_path, scripted):
    scripted[0] = ScriptedModel(kill_on_reward=True)
    with pytest.raises(KeyboardInterrupt):
        run(run_config(tmp_path))
    assert scripted[0].reasoner_prompts == 2  # the first batch's user
    contexts = list((tmp_path / "cache" / "pigreward" / "contexts").glob("*.jsonl"))
    assert len(contexts) == 1 and len(contexts[0].read_text().splitlines()) == 1

    scripted[0] = ScriptedModel()
    first = run(run_config(tmp_path))
    assert scripted[0].reasoner_prompts == 4 * 2  # only the users not stored before the kill
    assert len(contexts[0].read_text().splitlines()) == 5

    scripted[0] = ScriptedModel()
    again = run(run_config(tmp_path))
    assert again.resumed == 15 and again.computed == 0 and scripted[0].reasoner_prompts == 0
    assert again.results["metrics"] == first.results["metrics"]


def test_ablations_change_the_prompts(tmp_path, scripted):
    out = run(run_config(tmp_path, limit=3, options={"use_reasoner": "false"}))
    model = scripted[0]
    assert model.reasoner_prompts == 0
    assert out.results["evaluator"]["models"]["reasoner_backend"] is None  # no reasoner ran
    images = [sum(x.type == "image" for x in p.parts) for p in model.reward_prompts]
    assert images == [2 * 2 + 2] * 3  # both images of each reference pair, then the target pair

    scripted[0] = model = ScriptedModel()
    out = run(run_config(tmp_path, limit=3, options={"chain_of_thought": "false"}))
    instruction = model.reward_prompts[0].parts[0].value
    assert '{"answer": "A"}' in instruction and "dimensions" not in instruction
    assert out.results["evaluator"]["config"]["chain_of_thought"] is False


def test_requirements_name_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(RequirementError, match="Qwen/Qwen2-VL-7B-Instruct"):
        PIGReward.check_requirements(PIGRewardConfig())
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(RequirementError, match="base_url"):
        PIGReward.check_requirements(PIGRewardConfig(backend="openai"))
    with pytest.raises(ValueError, match="reward_adapter applies with backend=local only"):  # not silently ignored
        PIGReward.check_requirements(PIGRewardConfig(backend="openai", base_url="http://gpu:8000/v1", reward_adapter="lora"))
    with pytest.raises(RequirementError, match=rf"^pigreward: no such folder: {re.escape(repr(str(tmp_path / 'nope')))} "
                                               r"\(the adapter directory\); pass --option reward_adapter=DIR\.$"):
        PIGReward.check_requirements(PIGRewardConfig(model_path=str(tmp_path), reward_adapter=str(tmp_path / "nope")))



def test_a_missing_model_path_is_reported_as_model_path(tmp_path):
    """--model-path overrides reward_path and reasoner_path: pointing to --option reward_path= would not help."""
    with pytest.raises(RequirementError, match=r"pigreward \(model_path\): .*pass --model-path DIR\.$"):
        PIGReward.check_requirements(PIGRewardConfig(model_path=str(tmp_path / "nope")))
    with pytest.raises(RequirementError, match=r"pigreward \(reward_path\): .*pass --option reward_path=DIR\.$"):
        PIGReward.check_requirements(PIGRewardConfig(reward_path=str(tmp_path / "nope")))


def test_a_file_or_a_folder_that_is_no_adapter_is_refused_naming_the_option(tmp_path):
    """A model path naming a file (config.json, the weights) reached the user as the hub's 'Repo id must be in
    the form ...'; an adapter folder without adapter_config.json (e.g. the base model's) as peft's "Can't find
    'adapter_config.json'" naming no option, and an adapter's weight file as 'adapter directory ... not found'."""
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RequirementError, match=r"^pigreward \(model_path\): '.*config\.json' is a file; pass the model's "
                                               r"directory \(with config\.json and the weights\): --model-path DIR$"):
        PIGReward.check_requirements(PIGRewardConfig(model_path=str(tmp_path / "config.json")))
    with pytest.raises(RequirementError, match=r"^pigreward \(reasoner_path\): .* is a file; .*: --option reasoner_path=DIR$"):
        PIGReward.check_requirements(PIGRewardConfig(reward_path=str(tmp_path), reasoner_path=str(tmp_path / "config.json")))
    with pytest.raises(RequirementError, match=r"adapter directory '.*' has no adapter_config\.json, so it is not a PEFT adapter "
                                               r"directory \(a full model goes in --option reward_path=\) \(--option reward_adapter=DIR\)$"):
        PIGReward.check_requirements(PIGRewardConfig(model_path=str(tmp_path), reward_adapter=str(tmp_path)))
    with pytest.raises(RequirementError, match=r"^pigreward: the adapter directory '.*config\.json' is a file, not a folder; "
                                               r"pass --option reasoner_adapter=DIR\.$"):
        PIGReward.check_requirements(PIGRewardConfig(model_path=str(tmp_path), reasoner_adapter=str(tmp_path / "config.json")))
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    pytest.importorskip("peft")
    PIGReward.check_requirements(PIGRewardConfig(model_path=str(tmp_path), reward_adapter=str(tmp_path / "lora")))

@pytest.mark.parametrize("option, value", [("concurrency", 0), ("decode_batch", 0), ("max_new_tokens", 0), ("max_pixels", -1)])
def test_numeric_options_no_run_can_use_are_refused(option, value):
    with pytest.raises(ValueError, match=f"pigreward: option {option} must be >= [01], got {value}"):
        PIGReward.check_requirements(PIGRewardConfig(**{option: value}))


@pytest.mark.parametrize("options", [{"score_min": "-inf"}, {"score_max": "inf"}, {"score_min": "nan"}, {"score_min": "10"},
                                     {"min_dimensions": "0"}])
def test_a_score_range_or_dimension_count_no_prompt_can_state_is_refused(options):
    """score_min=-inf passed, and the prompt asked for scores "from -inf (worst) to 10"."""
    with pytest.raises(ValueError, match="^pigreward: need finite score_min < score_max and min_dimensions >= 1, got score_min="):
        PIGReward.check_requirements(PIGRewardConfig.from_options(options))


@pytest.mark.parametrize("options, shortest", [({"min_new_tokens": "300"}, 256), ({"min_new_tokens": "40", "chain_of_thought": "false"}, 32),
                                               ({"min_new_tokens": "2000", "use_reasoner": "false"}, 1024)])
def test_a_min_new_tokens_above_a_generation_length_is_refused(options, shortest):
    """It passed (judges refuse it), and every generation was asked for more tokens than it may have."""
    with pytest.raises(ValueError, match=f"^pigreward: option min_new_tokens must be <= the shortest generation length {shortest} "):
        PIGReward.check_requirements(PIGRewardConfig.from_options(options))


def test_an_unknown_dtype_is_refused_before_loading():
    with pytest.raises(ValueError, match="pigreward: option dtype must be bfloat16, float16 or float32, got 'bf16'"):
        PIGReward.check_requirements(PIGRewardConfig(dtype="bf16"))  # was AttributeError from getattr(torch, "bf16")


def test_score_range_options_take_decimals():
    config = PIGRewardConfig.from_options({"score_min": "0.5", "score_max": "10.0"})
    assert (config.score_min, config.score_max) == (0.5, 10.0)
    assert PIGRewardConfig.from_options({"score_min": "1"}).hash("pigreward", "1") == PIGRewardConfig().hash("pigreward", "1")


def test_tiny_qwen2vl_for_both_parts_through_the_runner(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pigbench.fastgen.backend import FastLocalBackend
    from pigbench.judging.random_models import qwen2_vl

    model, processor = qwen2_vl(seed=0)
    model.generation_config.repetition_penalty = 1.05  # as Qwen2-VL-7B-Instruct's: the engine applies it
    model.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    reasoner_prompts = []
    original = FastLocalBackend.generate

    def counting(self, prompts, params, share_keys=None):
        reasoner_prompts.extend(p for p in prompts if any(x.value == REASONER_INSTRUCTION for x in p.parts))
        return original(self, prompts, params, share_keys)

    monkeypatch.setattr(FastLocalBackend, "generate", counting)
    options = {"model_path": str(tmp_path / "tiny"), "dtype": "float32", "max_new_tokens": "6",
               "reasoner_max_new_tokens": "4", "max_pixels": str(56 * 56)}
    out = run(run_config(tmp_path, limit=6, options=options))
    assert len(reasoner_prompts) == 2 * 2  # two users, two references each, once
    models = out.results["evaluator"]["models"]
    assert models["reward_backend"]["generation"].startswith("pigbench.fastgen")
    assert models["reasoner_backend"]["generation"].startswith("pigbench.fastgen")
    assert models["reward_backend"]["repetition_penalty"] == models["reasoner_backend"]["repetition_penalty"] == 1.05
    for row in rows(out):
        pred = row["prediction"]
        assert isinstance(pred["raw_text"], str) and "error" not in pred
        assert pred["label"] in ("A", "B", "TIE", "INVALID")
        assert pred["label"] != "INVALID" or pred["extra"]["invalid_reason"]
    stored = (tmp_path / "cache" / "pigreward" / "contexts").glob("*.jsonl")
    assert sum(len(p.read_text().splitlines()) for p in stored) == 2


def test_openai_backend_serves_both_parts_with_cached_requests(tmp_path):
    from pigbench.judging.openai_backend import OpenAIBackend
    from pigbench.pigreward.backends import build_backends

    same = build_backends(PIGRewardConfig(backend="openai", base_url="http://gpu:8000/v1"), "cpu", tmp_path, "h")
    assert len(same) == 1 and isinstance(next(iter(same.values())), OpenAIBackend)
    split = PIGRewardConfig(backend="openai", base_url="http://gpu:8000/v1", reasoner_path="served-reasoner")
    backends = build_backends(split, "cpu", tmp_path, "h")
    assert {b.model for b in backends.values()} == {"served-reasoner", "Qwen/Qwen2-VL-7B-Instruct"}
    assert all(b.cache is not None for b in backends.values())
    assert PIGRewardConfig(decode_batch=8).hash("pigreward", "1") == PIGRewardConfig().hash("pigreward", "1")


def test_served_timeout_and_retries_reach_both_parts_and_keep_the_hash(tmp_path):
    from pigbench.pigreward.backends import build_backends

    served = PIGRewardConfig.from_options({"backend": "openai", "base_url": "http://gpu:8000/v1",
                                           "reasoner_path": "served-reasoner", "timeout_s": "600", "max_retries": "0",
                                           "request_deadline_s": "900"})
    backends = build_backends(served, "cpu", tmp_path, "h")
    assert len(backends) == 2
    assert all(b.timeout_s == 600 and b.retry.max_retries == 0 and b.request_deadline_s == 900
               for b in backends.values())
    default = PIGRewardConfig(backend="openai")
    assert default.hash("pigreward", "3") == "c0c036f3b275e7fa"  # the hash before these options existed
    assert PIGRewardConfig(backend="openai", timeout_s=5, max_retries=1,
                           request_deadline_s=60).hash("pigreward", "3") == "c0c036f3b275e7fa"
    for option, value in (("timeout_s", 0.0), ("timeout_s", float("nan")), ("timeout_s", float("inf")), ("max_retries", -1),
                          ("request_deadline_s", 0.0), ("request_deadline_s", float("inf"))):
        with pytest.raises(ValueError, match=f"option {option} must be"):
            PIGReward.check_requirements(PIGRewardConfig(backend="openai", base_url="http://gpu:8000/v1", **{option: value}))


def test_a_damaged_weight_file_is_named(tmp_path):
    pytest.importorskip("transformers")
    from pigbench.judging.random_models import qwen2_vl

    model, processor = qwen2_vl(seed=0)
    model.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    weights = tmp_path / "tiny" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(RequirementError, match=rf"^the PIGReward model at .* could not be read: the weight file {re.escape(str(weights))} is damaged or truncated"):
        run(run_config(tmp_path, limit=2, options={"model_path": str(tmp_path / "tiny"), "dtype": "float32"}))


@pytest.mark.parametrize("missing, message, option", [
    ("model.safetensors", "no weight file (model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
                          "pytorch_model.bin.index.json) in the folder", "model_path"),
    ("processor_config.json", "no image processor config (processor_config.json or preprocessor_config.json) in the folder",
     "reward_path"),
    ("tokenizer.json", "no tokenizer vocabulary (tokenizer.json, vocab.json and merges.txt, tokenizer.model, spiece.model, "
     "sentencepiece.bpe.model or vocab.txt) in the folder", "model_path"),
    ("tokenizer_config.json", "tokenizer_config.json not found in the folder", "model_path"),
    ("chat_template.jinja", "no chat template (chat_template.jinja or chat_template.json) in the folder", "model_path"),
])
def test_a_model_folder_without_weights_or_processor_files_is_one_line_saying_what_to_do(tmp_path, missing, message, option):
    """transformers said "Error no file named model.safetensors ... found in directory ..." or, without
    processor files, a long message pointing at huggingface.co; without tokenizer files it loaded a
    tokenizer other than the folder's (see the judge's test); each is now one line naming what is
    missing, the repo to download whole and the flag that points to the folder."""
    pytest.importorskip("transformers")
    from pigbench.judging.random_models import qwen2_vl

    folder = tmp_path / "tiny"
    model, processor = qwen2_vl(seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / missing).unlink()
    flag = "--model-path DIR" if option == "model_path" else f"--option {option}=DIR"
    options = {option: str(folder), "dtype": "float32", "use_reasoner": "false"}
    with pytest.raises(RequirementError) as info:
        run(run_config(tmp_path, limit=2, options=options))
    assert str(info.value) == (f"the PIGReward model at {str(folder)!r} is incomplete: {message}; download the whole "
                               f"model folder (`hf download Qwen/Qwen2-VL-7B-Instruct --local-dir DIR`), then pass {flag}")


def test_the_served_request_cache_files_do_not_change_with_the_version(tmp_path, monkeypatch):
    """A new PIGReward version (how replies are read) predicts again, from the cached replies."""
    from pigbench.evaluator import Runtime

    def files(version):
        monkeypatch.setattr(PIGReward, "version", version)
        ev = PIGReward(PIGRewardConfig(backend="openai", base_url="http://gpu:8000/v1"), Runtime(device="cpu", cache_dir=str(tmp_path)))
        ev.name = "pigreward"
        return ev.config_hash, sorted(str(b.cache.path) for b in ev.make_backends().values())

    (old_key, old_files), (new_key, new_files) = files("3"), files("4")
    assert old_key != new_key and old_files == new_files and old_files
