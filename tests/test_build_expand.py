"""`pigbench build expand`: reply validation, retries and reporting against a fake OpenAI-compatible server."""

import json

import pytest

from build_fixtures import FakeChatServer, good_reply, select
from pigbench.build.expand import InvalidReply, expand_prompt, parse_variants
from pigbench.build.expanders import OpenAIChatExpander
from pigbench.build.workspace import read_jsonl
from pigbench.cli import main as cli

FOUR = ["a red hydrant, photo", "a red hydrant, oil painting", "a red hydrant, anime", "a red hydrant, 3D render"]


@pytest.mark.parametrize("reply", [
    json.dumps({"variants": FOUR}),
    "Sure! Here you go:\n```json\n" + json.dumps({"variants": FOUR}) + "\n```\nEnjoy.",
    "The variants are " + json.dumps(FOUR) + ".",
    json.dumps({"variants": [f"  {v}\n" for v in FOUR]}),
])
def test_valid_replies_parse_to_four_clean_variants(reply):
    assert parse_variants(reply) == FOUR


@pytest.mark.parametrize("reply, reason", [
    ("I cannot help with that.", "no JSON"),
    (json.dumps({"prompts": FOUR}), 'no "variants" key'),
    (json.dumps({"variants": FOUR[:3]}), "exactly 4 variants, found 3"),
    (json.dumps({"variants": FOUR + ["extra"]}), "found 5"),
    (json.dumps({"variants": FOUR[:3] + ["   "]}), "variant 4 is empty"),
    (json.dumps({"variants": FOUR[:3] + ["A  RED hydrant, PHOTO"]}), "not all different"),
    (json.dumps({"variants": FOUR[:3] + [7]}), "variant 4 is a int"),
    (json.dumps({"variants": FOUR[:3] + ["x" * 301]}), "301 characters, more than 300"),
    (json.dumps({"variants": "one long string"}), "must be a list"),
])
def test_invalid_replies_are_refused_with_the_reason(reply, reason):
    with pytest.raises(InvalidReply, match=reason):
        parse_variants(reply)


def test_a_rejected_reply_is_sent_back_with_its_reason_then_accepted():
    replies = {1: (200, json.dumps({"variants": FOUR[:3]})), 2: (200, json.dumps({"variants": FOUR}))}
    with FakeChatServer(lambda base, attempt: replies[attempt]) as server:
        out = expand_prompt(OpenAIChatExpander(server.url, "fake-model", api_key="sk-x"), "A red hydrant", attempts=3)
    assert out.variants == FOUR and len(out.replies) == 2
    retry = server.requests[1]["messages"]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert "exactly 4 variants, found 3" in retry[2]["content"]
    assert server.requests[0]["model"] == "fake-model" and server.headers[0]["Authorization"] == "Bearer sk-x"


def test_cli_reports_sets_that_stay_invalid_and_retries_them_on_resume(tmp_path, monkeypatch, capsys):
    ws = select(tmp_path / "ws", 4)
    prompts = read_jsonl(ws.prompts)
    stubborn = prompts[1]["base_prompt"]
    fixed = {"now": False}

    def reply(base, attempt):
        if base == stubborn and not fixed["now"]:
            return 200, json.dumps({"variants": ["same", "same", "same", "same"]})
        if base == prompts[2]["base_prompt"] and attempt == 1:
            return 503, "overloaded"  # a transient failure costs one attempt
        return 200, good_reply(base)

    monkeypatch.setenv("TEST_EXPAND_KEY", "sk-secret")
    with FakeChatServer(reply) as server:
        args = ["build", "--workdir", str(ws.root), "expand", "--api-base", server.url, "--model", "m",
                "--api-key-env", "TEST_EXPAND_KEY", "--attempts", "2"]
        assert cli(args) == 1
        err = capsys.readouterr().err
        assert prompts[1]["set_id"] in err and "not all different" in err
        written = {v["set_id"]: v for v in read_jsonl(ws.variants)}
        assert set(written) == {p["set_id"] for p in prompts} - {prompts[1]["set_id"]}
        assert written[prompts[2]["set_id"]]["attempts"] == 2
        assert all(len(set(v["variants"])) == 4 for v in written.values())
        failure, = read_jsonl(ws.expand_failures)
        assert failure["set_id"] == prompts[1]["set_id"] and len(failure["replies"]) == 2 and "variants" not in failure
        assert all(h["Authorization"] == "Bearer sk-secret" for h in server.headers)

        fixed["now"] = True
        before = len(server.requests)
        assert cli(args) == 0
        assert len(server.requests) == before + 1  # only the failed set is asked again
    assert len(read_jsonl(ws.variants)) == 4
    assert "sk-secret" not in (ws.root / "variants.jsonl").read_text()


def test_cli_stops_with_a_clear_error_on_a_wrong_model_or_key(tmp_path, capsys):
    ws = select(tmp_path / "ws", 2)
    with FakeChatServer(lambda base, attempt: (401, "invalid api key")) as server:
        assert cli(["build", "--workdir", str(ws.root), "expand", "--api-base", server.url, "--model", "m"]) == 2
    assert "HTTP 401" in capsys.readouterr().err
    assert not ws.variants.exists()


@pytest.mark.parametrize("flag, value", [("--limit", "-1"), ("--limit", "0"), ("--max-chars", "0")])
def test_a_count_below_one_is_refused_before_any_request(tmp_path, capsys, flag, value):
    """--limit -1 used to expand all but the last pending prompt; --max-chars 0 made every reply invalid."""
    ws = select(tmp_path / "ws", 2)
    assert cli(["build", "--workdir", str(ws.root), "expand", "--api-base", "http://127.0.0.1:9/v1", "--model", "m",
                flag, value]) == 2
    assert capsys.readouterr().err == f"error: {flag} must be at least 1, got {value}\n"
    assert not ws.variants.exists()


def test_cli_without_an_expander_says_which_flags_to_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PIGBENCH_EXPAND_API_BASE", raising=False)
    ws = select(tmp_path / "ws", 2)
    assert cli(["build", "--workdir", str(ws.root), "expand"]) == 2
    assert "--api-base" in capsys.readouterr().err


@pytest.mark.models
def test_local_causal_lm_garbage_is_reported_not_filled(tmp_path, capsys):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "[EOS]", "{", "}", "variants", "a", "red", "hydrant", ":", ","])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]")
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, eos_token_id=1, bos_token_id=1)
    model_dir = tmp_path / "tiny-lm"
    transformers.LlamaForCausalLM(config).save_pretrained(model_dir)
    fast.save_pretrained(model_dir)
    ws = select(tmp_path / "ws", 1)
    code = cli(["build", "--workdir", str(ws.root), "expand", "--local-model", str(model_dir), "--attempts", "2",
                "--temperature", "0", "--max-new-tokens", "16"])
    assert code == 1
    failure, = read_jsonl(ws.expand_failures)
    assert failure["expander"]["backend"] == "transformers" and len(failure["errors"]) == 2
    assert not ws.variants.exists()
