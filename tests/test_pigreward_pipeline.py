"""PIGReward's pipeline on a recording backend: which references reach the reasoner and in what
order, which user context each target's reward prompt gets, and what lands in the predictions."""

from __future__ import annotations

import json

import pytest

from pigbench.judging.backend import Backend, Generation
from pigbench.pigreward.config import PIGRewardConfig
from pigbench.pigreward.context_cache import UserContextCache, context_key
from pigbench.pigreward.pipeline import PIGRewardPipeline
from pigbench.pigreward.prompts import REASONER_INSTRUCTION
from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target

REPLY = json.dumps({"dimensions": [{"name": f"d{k}", "definition": "", "score_a": 6, "score_b": 2, "justification": f"j{k}"}
                                   for k in range(3)], "total_a": 18, "total_b": 6, "answer": "A"})


def img(name: str) -> ImageRef:
    return ImageRef(name, b"", known_hash=f"hash-{name}")


def pair(prompt: str, preferred: str, rejected: str) -> ReferencePair:
    return ReferencePair(prompt, img(preferred), img(rejected))


def episode(user: str, refs: tuple[ReferencePair, ...], sample: str) -> Episode:
    return Episode(user, refs, Target(sample, f"target {sample}", img(f"{sample}-a"), img(f"{sample}-b"), Label.A))


class Recorder(Backend):
    """Reasoner replies name the images in the order shown ("a1>b1"; blank for prompt "blank");
    reward replies are :data:`REPLY`. Records every call's prompts, params and share keys."""

    shares_prefixes = True

    def __init__(self) -> None:
        self.calls: list[tuple[list, object, object]] = []

    def generate(self, prompts, params, share_keys=None):
        self.calls.append((list(prompts), params, share_keys))
        out = []
        for p in prompts:
            if any(x.value == REASONER_INSTRUCTION for x in p.parts):
                out.append(Generation(" " if '"blank"' in p.parts[0].value else ">".join(i.id for i in p.images)))
            else:
                out.append(Generation(REPLY))
        return out

    def provenance(self):
        return {}


U1 = (pair("p1", "a1", "b1"), pair("p2", "a2", "b2"))
U2 = (pair("blank", "c1", "d1"),)


def test_each_target_gets_its_own_users_context_built_in_reference_order():
    model = Recorder()
    pipeline = PIGRewardPipeline(model, model, UserContextCache(None, "f"), PIGRewardConfig().settings())
    episodes = [episode("u1", U1, "s1"), episode("u2", U2, "s2"), episode("u1", U1, "s3")]
    preds = pipeline.predict(episodes)

    (reasoner, _, _), (reward, _, share_keys) = model.calls
    assert [[(x.type, x.value if x.type == "text" else x.value.id) for x in p.parts[1:5]] for p in reasoner] == [
        [("text", "Preferred image:"), ("image", pre), ("text", "Rejected image:"), ("image", rej)]
        for pre, rej in (("a1", "b1"), ("a2", "b2"), ("c1", "d1"))]  # each user's pairs once, in order
    assert reasoner[0].parts[0].value.startswith('A user asked an image generator for: "p1".')
    contexts = [next(x.value for x in p.parts if x.type == "text" and x.value.startswith("What this user")) for p in reward]
    u1 = 'What this user\'s past choices say about their taste:\n1. Prompt: "p1". a1>b1\n2. Prompt: "p2". a2>b2'
    u2 = 'What this user\'s past choices say about their taste:\n1. Prompt: "blank". (no rationale)'
    assert contexts == [u1, u2, u1]
    assert [[i.id for i in p.images] for p in reward] == [["s1-a", "s1-b"], ["s2-a", "s2-b"], ["s3-a", "s3-b"]]
    keys = [context_key("u1", U1), context_key("u2", U2), context_key("u1", U1)]
    assert share_keys == keys and [p.extra["context_key"] for p in preds] == keys
    assert [p.sample_id for p in preds] == ["s1", "s2", "s3"]
    assert preds[0].label == Label.A and (preds[0].score_a, preds[0].score_b) == (18, 6)
    assert preds[0].rationale == "d0: j0\nd1: j1\nd2: j2" and [d.name for d in preds[0].dimensions] == ["d0", "d1", "d2"]


def test_without_the_reasoner_the_reward_prompt_shows_each_pair_preferred_first():
    model = Recorder()
    pipeline = PIGRewardPipeline(model, None, UserContextCache(None, "f"), PIGRewardConfig(use_reasoner=False).settings())
    pipeline.predict([episode("u1", U1, "s1")])
    [(prompts, _, _)] = model.calls
    labelled = [(x.value, y.value.id) for x, y in zip(prompts[0].parts, prompts[0].parts[1:]) if y.type == "image"]
    assert labelled == [("Preferred image:", "a1"), ("Rejected image:", "b1"), ("Preferred image:", "a2"),
                        ("Rejected image:", "b2"), ("Image A:", "s1-a"), ("Image B:", "s1-b")]


def test_a_context_key_names_the_user_and_every_reference_pair_in_order():
    """No other user's, other K's or other references' context is ever reused."""
    variants = [("u1", U1), ("u2", U1), ("u1", U1[:1]), ("u1", U1[::-1]), ("u1", (U1[0], pair("p2", "a2", "x"))),
                ("u1", (U1[0], pair("p2", "x", "b2"))), ("u1", (U1[0], pair("p3", "a2", "b2")))]
    assert len({context_key(user, refs) for user, refs in variants}) == len(variants)
    assert context_key("u1", U1) == context_key("u1", (pair("p1", "a1", "b1"), pair("p2", "a2", "b2")))


class Failing(Recorder):
    """The reasoner fails on the references of prompt "p2" (first call only)."""

    def generate(self, prompts, params, share_keys=None):
        out = super().generate(prompts, params, share_keys)
        fail = len(self.calls) == 1
        return [Generation(None, error="boom") if fail and '"p2"' in p.parts[0].value else g for p, g in zip(prompts, out)]


def test_a_user_whose_reasoner_call_failed_is_invalid_and_retried_later(tmp_path):
    model = Failing()
    pipeline = PIGRewardPipeline(model, model, UserContextCache(tmp_path, "f"), PIGRewardConfig().settings())
    first = pipeline.predict([episode("u1", U1, "s1"), episode("u2", U2, "s2")])
    assert first[0].label == Label.INVALID and first[0].error == "reasoner failed for user 'u1': boom"
    assert first[1].label == Label.A and first[1].error is None
    assert context_key("u1", U1) not in pipeline.cache and len(UserContextCache(tmp_path, "f")) == 1

    again = PIGRewardPipeline(model, model, UserContextCache(tmp_path, "f"), PIGRewardConfig().settings())
    assert again.predict([episode("u1", U1, "s1")])[0].label == Label.A
    assert [len(prompts) for prompts, _, _ in model.calls[-2:]] == [2, 1]  # u1's two pairs again, then its target


def test_a_line_cut_by_a_kill_loses_no_context_stored_before_or_after_it(tmp_path):
    cache = UserContextCache(tmp_path, "f")
    pipeline = PIGRewardPipeline(Recorder(), Recorder(), cache, PIGRewardConfig().settings())
    pipeline.contexts([episode("u1", U1, "s1")])
    with cache.path.open("a") as f:
        f.write('{"key": "cut", "user_id": "u9", "ratio')  # a kill mid-write
    pipeline.contexts([episode("u2", U2, "s2")])
    reloaded = UserContextCache(tmp_path, "f")
    assert len(reloaded) == 2 and reloaded.get(context_key("u2", U2)) == cache.get(context_key("u2", U2))
    assert context_key("u1", U1) in reloaded
    assert context_key("u1", U1) not in UserContextCache(tmp_path, "another reasoner")


class Rerouted(Recorder):
    """A server that answered the reasoner's prompt for "p2" with another checkpoint than asked for."""

    def generate(self, prompts, params, share_keys=None):
        out = super().generate(prompts, params, share_keys)
        return [Generation(g.text, served={"model": "other-ckpt", "system_fingerprint": "fp_1"})
                if '"p2"' in p.parts[0].value else g for p, g in zip(prompts, out)]


def test_a_context_records_who_served_its_rationales_and_its_predictions_say_so(tmp_path):
    """As a served judge's prediction keeps ``served``, a context keeps one record per rationale, in
    the cache file, and the predictions made with it (also from the cache, in a later run) carry it."""
    served = [{}, {"model": "other-ckpt", "system_fingerprint": "fp_1"}]
    model = Rerouted()
    pipeline = PIGRewardPipeline(model, model, UserContextCache(tmp_path, "f"), PIGRewardConfig().settings())
    first = pipeline.predict([episode("u1", U1, "s1"), episode("u2", U2, "s2")])
    assert first[0].extra["reasoner_served"] == served and "reasoner_served" not in first[1].extra
    rows = {row["user_id"]: row for row in map(json.loads, pipeline.cache.path.read_text().splitlines())}
    assert rows["u1"]["served"] == served and "served" not in rows["u2"]
    again = PIGRewardPipeline(Recorder(), Recorder(), UserContextCache(tmp_path, "f"), PIGRewardConfig().settings())
    (cached,) = again.predict([episode("u1", U1, "s3")])
    assert cached.extra["reasoner_served"] == served and again.reasoner.calls == []  # the context came from the cache


def test_contexts_are_keyed_by_what_changes_the_reasoner_only():
    base = PIGRewardConfig().reasoner_fingerprint()
    for changed in (dict(reasoner_max_new_tokens=64), dict(max_pixels=256 * 28 * 28), dict(reasoner_path="other"),
                    dict(model_path="other"), dict(min_new_tokens=4)):
        assert PIGRewardConfig(**changed).reasoner_fingerprint() != base, changed
    for reward_only in (dict(max_new_tokens=64), dict(reward_path="other"), dict(allow_tie=True), dict(chain_of_thought=False)):
        assert PIGRewardConfig(**reward_only).reasoner_fingerprint() == base, reward_only


def test_contexts_of_a_local_reasoner_are_keyed_by_the_engine_s_output_version(monkeypatch):
    """Contexts generated before the engine applied the checkpoint's repetition penalty are not reused."""
    import pigbench.fastgen

    local, served = PIGRewardConfig(), PIGRewardConfig(backend="openai")
    before = local.reasoner_fingerprint(), served.reasoner_fingerprint()
    monkeypatch.setattr(pigbench.fastgen, "OUTPUT_VERSION", "older")
    assert local.reasoner_fingerprint() != before[0]
    assert served.reasoner_fingerprint() == before[1]  # a server's outputs do not depend on the engine


def test_predictions_of_the_local_backend_are_keyed_by_the_engine_s_output_version(monkeypatch):
    """Only the contexts were: a bump of the engine's output version alone reused stored predictions."""
    import pigbench.fastgen

    local, served = PIGRewardConfig(), PIGRewardConfig(backend="openai")
    before = local.hash("pigreward", "3"), served.hash("pigreward", "3")
    monkeypatch.setattr(pigbench.fastgen, "OUTPUT_VERSION", "older")
    assert local.hash("pigreward", "3") != before[0]
    assert served.hash("pigreward", "3") == before[1]  # a server's answers (and its request cache) stay


class Served(Recorder):
    """A backend without shared prefixes (e.g. the OpenAI-compatible one): called without share keys."""

    shares_prefixes = False


@pytest.mark.parametrize("backend", [Recorder, Served])
def test_each_stage_generates_with_its_own_length(backend):
    for options, reward_tokens in (({}, 1024), ({"max_new_tokens": 300}, 300), ({"chain_of_thought": False}, 32)):
        model = backend()
        config = PIGRewardConfig(reasoner_max_new_tokens=100, **options)
        PIGRewardPipeline(model, model, UserContextCache(None, "f"), config.settings()).predict([episode("u1", U1, "s1")])
        (_, reasoner, _), (_, reward, _) = model.calls
        assert (reasoner.max_new_tokens, reward.max_new_tokens) == (100, reward_tokens), options


def test_the_evaluator_gives_each_part_its_own_backend(monkeypatch, tmp_path):
    from pigbench.evaluators.pigreward import PIGReward
    from pigbench.runner import RunConfig, build_evaluator

    monkeypatch.setattr(PIGReward, "check_requirements", classmethod(lambda cls, config: None))
    monkeypatch.setattr(PIGReward, "make_backends", lambda self: {(m, a): Recorder() for m, a, _ in self.config.parts()})
    ev = build_evaluator(RunConfig(evaluator="pigreward", dataset="toy", cache_dir=str(tmp_path),
                                   options={"reasoner_path": "the-reasoner", "reward_adapter": "rm-lora"}))
    ev.setup()
    assert ev.pipeline.reward is not ev.pipeline.reasoner
    assert ev.provenance()["reasoner"] == "the-reasoner" and ev.provenance()["reward_adapter"] == "rm-lora"
    assert ev.pipeline.cache.path.name == f"{ev.config.reasoner_fingerprint()}.jsonl"


def test_a_part_with_its_own_adapter_gets_its_own_local_model(monkeypatch, tmp_path):
    """One base model, a LoRA on the reward model only: the reasoner must not run the adapted model."""
    fastgen = pytest.importorskip("pigbench.fastgen.backend")
    from pigbench import lvlm_loader
    from pigbench.pigreward.backends import build_backends

    monkeypatch.setattr(lvlm_loader, "load_lvlm", lambda model, name, adapter, **kwargs: (f"{model}+{adapter}", None))
    monkeypatch.setattr(fastgen, "FastLocalBackend", lambda net, processor, batch_size, source: net)
    config = PIGRewardConfig(reward_adapter="rm-lora")
    assert build_backends(config, "cpu", tmp_path, "h") == {
        (config.reward_model, "rm-lora"): f"{config.reward_model}+rm-lora", (config.reasoner_model, ""): f"{config.reasoner_model}+"}


def test_a_failed_reward_call_is_an_error_not_an_unparseable_answer():
    """An error is retried by a resumed run; an unparseable answer is kept as the model's answer."""
    class Down(Recorder):
        def generate(self, prompts, params, share_keys=None):
            return [Generation(None, error="server down") for _ in super().generate(prompts, params, share_keys)]

    pipeline = PIGRewardPipeline(Down(), None, UserContextCache(None, "f"), PIGRewardConfig(use_reasoner=False).settings())
    [pred] = pipeline.predict([episode("u1", U1, "s1")])
    assert pred.label == Label.INVALID and pred.error == "server down" and "invalid_reason" not in pred.extra


def test_a_served_refusal_is_a_refused_answer_and_no_rationale(tmp_path):
    """A server's message.refusal (the backend marks the generation ``refused``): the reward step's
    prediction keeps it as the raw text, INVALID with a reason quoting it, never read as a
    judgement even where it holds one; the reasoner's refused rationale stays empty."""
    refusal = "I can't help with that. " + REPLY

    class Refusing(Recorder):
        def generate(self, prompts, params, share_keys=None):
            out = super().generate(prompts, params, share_keys)
            return [Generation(refusal, refused=True) if g.text == REPLY or '"p2"' in p.parts[0].value else g
                    for p, g in zip(prompts, out)]

    model = Refusing()
    pipeline = PIGRewardPipeline(model, model, UserContextCache(tmp_path, "f"), PIGRewardConfig().settings())
    [pred] = pipeline.predict([episode("u1", U1, "s1")])
    assert pred.label == Label.INVALID and pred.error is None and pred.raw_text == refusal
    assert pred.extra["invalid_reason"] == 'the model refused: "I can\'t help with that. {"dimensions": [{"name": "d0", "defi..."'
    assert pred.dimensions == [] and pred.extra["format_violations"] == []
    assert pipeline.cache.get(context_key("u1", U1)).rationales == ("a1>b1", "")


def test_a_refused_or_empty_rationale_is_noted_in_the_users_predictions_also_from_the_cache(tmp_path):
    """A reasoner's refusal left the user's rationale empty with no note in the results: the context
    said "(no rationale)" and the predictions nothing. Each prediction now lists the reference pairs
    without a rationale; the cache file and the prompts are as before."""

    class RefusingReasoner(Recorder):
        def generate(self, prompts, params, share_keys=None):
            out = super().generate(prompts, params, share_keys)
            return [Generation("I can't help with that.", refused=True) if '"p2"' in p.parts[0].value else g
                    for p, g in zip(prompts, out)]

    model = RefusingReasoner()
    pipeline = PIGRewardPipeline(model, model, UserContextCache(tmp_path, "f"), PIGRewardConfig().settings())
    first = pipeline.predict([episode("u1", U1, "s1"), episode("u2", U2, "s2"), episode("u3", U1[:1], "s3")])
    assert [p.label for p in first] == [Label.A] * 3  # the reward step answered
    assert first[0].extra["reasoner_empty_rationales"] == [2]  # refused
    assert first[1].extra["reasoner_empty_rationales"] == [1]  # replied with blanks only
    assert "reasoner_empty_rationales" not in first[2].extra
    (reward_prompts, _, _) = model.calls[1]
    assert any('2. Prompt: "p2". (no rationale)' in x.value for x in reward_prompts[0].parts if x.type == "text")
    rows = {row["user_id"]: row for row in map(json.loads, pipeline.cache.path.read_text().splitlines())}
    assert set(rows["u1"]) == {"key", "user_id", "rationales", "context"} and rows["u1"]["rationales"] == ["a1>b1", ""]
    again = PIGRewardPipeline(Recorder(), Recorder(), UserContextCache(tmp_path, "f"), PIGRewardConfig().settings())
    (cached,) = again.predict([episode("u1", U1, "s4")])
    assert cached.extra["reasoner_empty_rationales"] == [2] and again.reasoner.calls == []


@pytest.mark.parametrize("use_reasoner", [True, False])
def test_without_references_the_reward_prompt_claims_no_past_choices(use_reasoner):
    """K = 0: the prompt said 'What this user's past choices say about their taste:' (or 'This user's
    past choices: ...') followed by nothing."""
    model = Recorder()
    settings = PIGRewardConfig(use_reasoner=use_reasoner).settings()
    pipeline = PIGRewardPipeline(model, model if use_reasoner else None, UserContextCache(None, "f"), settings)
    assert pipeline.predict([episode("u1", (), "s1")])[0].label == Label.A
    [(prompts, _, _)] = model.calls  # no reasoner call
    assert [x.value for x in prompts[0].parts[1:3]] == ["No past choices of this user are available.",
                                                        'The user now asked for: "target s1"']
