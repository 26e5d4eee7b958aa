"""Several OpenAI-compatible servers at once: the pool's balancing and cool-offs, and the judge and
PIGReward run through the runner against two servers on 127.0.0.1, one of which dies mid-run: every
request is answered exactly once and the results are complete (equal to a healthy server's)."""

import json
from collections import Counter

import pytest

from pigbench.judging.backend import GenerationParams
from pigbench.judging.fake_server import FakeServer, Reply, keyed_verdict, request_texts
from pigbench.judging.messages import Prompt, text
from pigbench.judging.openai_backend import OpenAIBackend, RetryPolicy, split_base_urls
from pigbench.judging.request_cache import request_key
from pigbench.judging.server_pool import ServerPool
from pigbench.pigreward.prompts import REASONER_INSTRUCTION
from pigbench.runner import RunConfig, run


# the pool ------------------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_least_outstanding_with_round_robin_ties():
    pool = ServerPool(["a", "b", "c"], clock=Clock())
    assert [pool.acquire() for _ in range(4)] == ["a", "b", "c", "a"]
    pool.release("b", ok=True)
    pool.release("c", ok=True)
    assert pool.acquire() == "b"  # b and c have 0 in flight; b comes first after the last choice (a)
    assert pool.acquire() == "c"
    assert pool.stats() == {"a": {"served": 0, "failed": 0}, "b": {"served": 1, "failed": 0},
                            "c": {"served": 1, "failed": 0}}


def test_a_failed_server_cools_off_longer_after_each_failure_and_success_resets_it():
    clock = Clock()
    pool = ServerPool(["a", "b"], cool_off_s=5, max_cool_off_s=12, clock=clock)
    pool.release(pool.acquire(), ok=False)  # a fails: down for 5 s
    assert [pool.acquire() for _ in range(3)] == ["b", "b", "b"] and pool.any_up()
    clock.now += 5
    assert pool.acquire() == "a"  # back after its cool-off (and idle, so least outstanding)
    pool.release("a", ok=False)  # second failure in a row: 10 s
    clock.now += 9
    assert pool.acquire() == "b"
    clock.now += 1
    assert pool.acquire() == "a"
    pool.release("a", ok=False)  # third: 20 s, capped at 12
    clock.now += 12
    assert pool.acquire() == "a"
    pool.release("a", ok=True)  # a success resets the count
    pool.release(pool.acquire(), ok=False)
    clock.now += 5
    assert "a" in {pool.acquire(), pool.acquire()}


def test_a_server_that_asks_to_retry_after_a_while_is_down_that_long_within_the_cap():
    """A rate-limited server's Retry-After outlasts the cool-off: probing it sooner only meets another 429."""
    clock = Clock()
    pool = ServerPool(["a", "b"], cool_off_s=5, max_cool_off_s=60, clock=clock)
    pool.release(pool.acquire(), ok=False, retry_after=30)
    clock.now += 29
    assert pool.acquire() == "b"
    pool.release("b", ok=True)
    clock.now += 1
    assert pool.acquire() == "a"
    pool.release("a", ok=False, retry_after=3600)  # capped at max_cool_off_s
    clock.now += 59
    assert pool.acquire() == "b"
    clock.now += 1
    assert pool.acquire() == "a"
    pool.release("a", ok=False, retry_after=1)  # shorter than the cool-off (20 s, third failure): the cool-off
    clock.now += 19
    assert pool.acquire() == "b"


def test_a_rate_limited_server_waits_out_its_retry_after_while_the_other_serves():
    def limited(body):
        return Reply(status=429, headers={"Retry-After": "30"})

    with FakeServer(limited) as a, FakeServer(keyed_verdict) as b:
        backend = OpenAIBackend([a.url, b.url], "m", retry=RetryPolicy(max_retries=2, backoff_s=0.01), concurrency=1)
        backend.pool.cool_off_s = 0  # without Retry-After, a would be probed again at once
        gens = backend.generate([Prompt((text(str(i)),)) for i in range(6)], GenerationParams())
    assert all(g.error is None for g in gens) and a.hits == 1 and b.hits == 6


def test_a_recovering_server_gets_one_probe_at_a_time():
    clock = Clock()
    pool = ServerPool(["a", "b"], cool_off_s=5, clock=clock)
    pool.release(pool.acquire(), ok=False)
    clock.now += 5
    assert [pool.acquire() for _ in range(4)] == ["b", "a", "b", "b"]  # a: one probe, though least loaded
    pool.release("a", ok=True)
    assert [pool.acquire() for _ in range(3)] == ["a", "a", "a"]  # restored: least outstanding again


def test_when_every_server_is_down_the_first_to_recover_is_tried():
    clock = Clock()
    pool = ServerPool(["a", "b"], cool_off_s=5, clock=clock)
    pool.release(pool.acquire(), ok=False)  # a down until 105
    clock.now += 1
    pool.release(pool.acquire(), ok=False)  # b down until 106
    assert not pool.any_up() and pool.acquire() == "a"
    pool.release("a", ok=False, retry_after=60)  # a down until 161 now, b still until 106
    assert not pool.any_up() and pool.acquire() == "b"  # b first in round-robin order or not: it recovers first
    pool.release("b", ok=False)  # b's second failure: down 10 s, until 111
    assert pool.acquire() == "b"  # a (first in order now) asked for a minute


def test_base_urls_from_a_json_list_or_commas_and_bad_urls_named():
    assert split_base_urls('["http://a/v1/", "http://b/v1"]') == split_base_urls("http://a/v1, http://b/v1") == [
        "http://a/v1", "http://b/v1"]
    with pytest.raises(ValueError, match="'gpu1:8000/v1'"):
        split_base_urls("http://a/v1,gpu1:8000/v1")
    with pytest.raises(ValueError, match="JSON list"):
        split_base_urls('["http://a/v1",')


# two servers on 127.0.0.1, one dies mid-run ---------------------------------------------------------
@pytest.fixture
def servers():
    """``servers(reply, die_after=None)`` starts a fake server that takes 5 ms per request, so several
    requests are in flight on each; all are closed at the end."""
    made: list[FakeServer] = []

    def make(reply, die_after=None):
        made.append(FakeServer(reply, latency_s=0.005, die_after=die_after))
        return made[-1]

    yield make
    for s in made:
        s.close()


def served_once(*servers: FakeServer) -> Counter:
    total = sum((s.answered for s in servers), Counter())
    assert set(total.values()) == {1}, "a request was answered more than once"
    return total


def test_backend_requests_go_to_the_survivor_and_are_answered_once(servers):
    healthy, dying = servers(keyed_verdict), servers(keyed_verdict, die_after=6)
    backend = OpenAIBackend([dying.url, healthy.url], "m", concurrency=8,
                            retry=RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05))
    prompts = [Prompt((text(f"prompt {i}"),)) for i in range(40)]
    gens = backend.generate(prompts, GenerationParams())
    assert all(g.error is None for g in gens)
    assert dying.dead and dying.dropped >= 1 and dying.answered.total() == 6
    assert served_once(healthy, dying).total() == 40
    stats = backend.pool.stats()
    assert stats[dying.url]["failed"] >= 1 and stats[healthy.url]["served"] == 40 - 6


def config(tmp_path, name, evaluator, base_url, **kw):
    return RunConfig(evaluator=evaluator, dataset="toy", output=str(tmp_path / name / "results"),
                     cache_dir=str(tmp_path / name / "cache"), progress=False, n_bootstrap=50,
                     options={"base_url": base_url, **kw.pop("options", {})}, **kw)


def jsonl(outcome) -> str:
    return outcome.results_path.with_name(outcome.results_path.stem + ".predictions.jsonl").read_text()


def test_judge_run_against_two_servers_one_dying_is_complete_and_equal_to_a_healthy_run(servers, tmp_path):
    reference = servers(keyed_verdict)
    alone = run(config(tmp_path, "alone", "openai-judge", reference.url, dataset_options={"users": "6"}))
    healthy, dying = servers(keyed_verdict), servers(keyed_verdict, die_after=7)
    pooled = run(config(tmp_path, "pooled", "openai-judge", f"{dying.url},{healthy.url}",
                        dataset_options={"users": "6"}))
    n = pooled.results["metrics"]["n"]
    assert n == 30 and pooled.results["failures"]["count"] == 0 and pooled.results["metrics"]["invalid_rate"] == 0
    assert dying.dead and dying.dropped >= 1
    assert set(served_once(healthy, dying)) == set(reference.answered) and len(reference.answered) == n
    assert jsonl(pooled) == jsonl(alone)
    assert pooled.results["evaluator"]["models"]["base_urls"] == [dying.url, healthy.url]


def pigreward_reply(body: dict) -> str:
    if REASONER_INSTRUCTION in request_texts(body):
        return "The user likes bright images."
    a, b = (8, 3) if int(request_key(body), 16) % 2 else (3, 8)
    dims = [{"name": f"d{k}", "definition": "x", "score_a": a, "score_b": b, "justification": "y"} for k in range(3)]
    return json.dumps({"dimensions": dims, "total_a": 3 * a, "total_b": 3 * b, "answer": "A" if a > b else "B"})


def test_pigreward_run_against_two_servers_one_dying_is_complete(servers, tmp_path):
    healthy, dying = servers(pigreward_reply), servers(pigreward_reply, die_after=5)
    out = run(config(tmp_path, "pooled", "pigreward", f"{dying.url},{healthy.url}",
                     dataset_options={"users": "5", "records": "5"}, reference_size=2, batch_size=2,
                     options={"backend": "openai", "model_path": "served-qwen2-vl"}))
    assert out.results["metrics"]["n"] == 15 and out.results["failures"]["count"] == 0
    assert out.results["metrics"]["invalid_rate"] == 0
    assert dying.dead and dying.dropped >= 1
    assert served_once(healthy, dying).total() == 5 * 2 + 15  # one rationale per reference pair, one reply per target
