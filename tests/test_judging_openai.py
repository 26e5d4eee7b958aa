"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 started in the test:
success, malformed answers, 429/5xx then success, timeouts, failover, resume without repeated
requests, answer probabilities, and the API key kept out of results, logs and caches."""

import contextlib
import email.utils
import io
import json
import math
import sqlite3
import time

import pytest
from PIL import Image

from pigbench.evaluator import Runtime
from pigbench.judging.backend import GenerationParams
from pigbench.judging.fake_server import FakeServer, Reply
from pigbench.judging.messages import Prompt, image, reference_prompt, text
from pigbench.judging.openai_backend import OpenAIBackend, RetryPolicy, _retry_after
from pigbench.judging.request_cache import RequestCache, request_key
from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target
from pigbench.registry import evaluators

KEY = "sk-test-DO-NOT-LEAK-1234"
FAST = RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def server():
    """Answers ``<answer>B</answer>`` unless a test sets ``server.reply`` or ``server.script``."""
    with FakeServer(lambda body: "<answer>B</answer>") as s:
        yield s


def png(name, color=(10, 200, 30)):
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, format="PNG")
    return ImageRef(name, buf.getvalue())


def episode(n, k=1):
    refs = tuple(ReferencePair(f"ref {n}.{i}", png(f"p{n}.{i}"), png(f"r{n}.{i}")) for i in range(k))
    return Episode(f"u{n}", refs, Target(f"s{n}", f"prompt {n}", png(f"a{n}"), png(f"b{n}", (n, 0, 0)), Label.INVALID))


def backend(server, tmp_path=None, **kw):
    kw.setdefault("retry", FAST)
    cache = RequestCache(tmp_path / "requests.sqlite") if tmp_path else None
    return OpenAIBackend(server.url, "test-model", cache=cache, **kw)


def attempts_of(b: OpenAIBackend) -> list[str]:
    """The list of the URL of every HTTP request ``b`` makes from now on, retries included (its one-attempt
    ``_post`` wrapped on the instance)."""
    urls: list[str] = []
    post = b._post

    def recording(url, data, deadline):
        urls.append(url)
        return post(url, data, deadline)

    b._post = recording
    return urls


def judge(server, tmp_path, **options):
    cls = evaluators.get("openai-judge")
    j = cls(cls.Config(base_url=server.url, **options))
    j.backend = backend(server, tmp_path)
    return j


def test_success_sends_interleaved_parts_and_parses(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    preds = judge(server, tmp_path).predict([episode(0), episode(1)])
    assert [(p.sample_id, p.label, p.raw_text) for p in preds] == [("s0", Label.B, "<answer>B</answer>"),
                                                                   ("s1", Label.B, "<answer>B</answer>")]
    body = server.requests[0]
    assert body["model"] == "test-model"
    content = body["messages"][0]["content"]
    kinds = [c["type"] if c["type"] == "image_url" else c["text"].strip() for c in content]
    assert kinds[kinds.index("Preferred image:") + 1] == "image_url"
    assert kinds[kinds.index("Image B:") + 1] == "image_url" and kinds.count("image_url") == 4
    assert content[kinds.index("Image A:") + 1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["temperature"] == 0 and body["max_tokens"] == 16
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert all(KEY not in json.dumps(body) for body in server.requests)  # only ever in the header


def test_text_parts_read_as_lines_when_a_template_joins_them(server):
    """Served chat templates (Qwen2-VL's) join a turn's parts as they are, so each text part but the
    last ends with a newline, as the local backend sends them; no prompt runs into its label."""
    body = backend(server).request_body(reference_prompt(episode(0)), GenerationParams())
    joined = "".join("<img>" if c["type"] == "image_url" else c["text"] for c in body["messages"][0]["content"])
    assert "Prompt: ref 0.0\nPreferred image:\n<img>Rejected image:\n<img>" in joined
    assert "Prompt: prompt 0\nImage A:\n<img>Image B:\n<img>Which of the two images" in joined
    assert not joined.endswith("\n")


def test_malformed_answer_is_invalid_with_raw_text(server, tmp_path):
    server.reply = lambda body: "Both look nice, hard to say!"
    (pred,) = judge(server, tmp_path).predict([episode(0)])
    assert pred.label == Label.INVALID and pred.error is None
    assert pred.raw_text == "Both look nice, hard to say!" and pred.extra["invalid_reason"]


def test_malformed_response_is_retried_then_an_error_and_not_cached(server, tmp_path):
    """A 200 answer without choices[0].message (a gateway's error object) is retried like one that is not JSON."""
    server.script = [Reply(raw=json.dumps({"error": {"message": "upstream timed out"}}))]
    b = backend(server, tmp_path)
    (gen,) = b.generate([Prompt((text("hi"),))], GenerationParams())
    assert gen.error is None and gen.text == "<answer>B</answer>" and server.hits == 2 and len(b.cache) == 1
    server.script = [Reply(raw=json.dumps({"object": "error"})), Reply(raw=json.dumps({"choices": [{"message": "x"}]}))]
    b = backend(server, tmp_path, retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    (gen,) = b.generate([Prompt((text("again"),))], GenerationParams())
    assert gen.text is None and server.hits == 4 and len(b.cache) == 1
    assert gen.error == (f"gave up after 2 attempts: malformed response from {server.url}/chat/completions "
                         """(no choices[0].message): b'{"choices": [{"message": "x"}]}'""")


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_transient_status_then_success(server, status):
    server.script = [Reply(status=status, headers={"Retry-After": "0"}), Reply(status=status)]
    (gen,) = backend(server).generate([Prompt((text("hi"),))], GenerationParams())
    assert gen.error is None and gen.text == "<answer>B</answer>"
    assert server.hits == 3


def test_client_error_is_not_retried(server):
    server.script = [Reply(status=400)]
    (gen,) = backend(server).generate([Prompt((text("hi"),))], GenerationParams())
    assert gen.text is None and gen.error.startswith("HTTP 400") and server.hits == 1


def test_retries_run_out(server):
    server.script = [Reply(status=429)] * 10
    (gen,) = backend(server, retry=RetryPolicy(max_retries=2, backoff_s=0.01)).generate([Prompt((text("x"),))],
                                                                                       GenerationParams())
    assert "gave up after 3 attempts" in gen.error and server.hits == 3


def test_an_html_error_page_is_a_one_line_reason_that_keeps_the_attempt_count(server):
    """A proxy's error page (nginx's 502) has line breaks; the runner counts an error by its first line,
    so the failure would read 'HTTP 502 from ...: <html>' and lose what went wrong and the attempts."""
    page = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")
    server.script = [Reply(status=502, raw=page)] * 2
    (gen,) = backend(server, retry=RetryPolicy(max_retries=1, backoff_s=0.01)).generate([Prompt((text("x"),))],
                                                                                       GenerationParams())
    assert gen.text is None and server.hits == 2
    assert gen.error == (f"gave up after 2 attempts: HTTP 502 from {server.url}/chat/completions: <html> <head>"
                         "<title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> "
                         "</body> </html>")


def test_a_long_server_error_counts_with_its_attempt_count_and_groups_into_one_reason(server):
    """Failures are counted by the first 200 characters of their error; a long error body pushed the
    "(gave up after N attempts)" ending out of the count. The count now comes first, and the same
    fault on several samples is still one reason."""
    from pigbench.results import failure_summary

    body = "upstream connect error or disconnect/reset before headers. " * 6
    server.script = [Reply(status=502, raw=body)] * 6
    b = backend(server, retry=RetryPolicy(max_retries=1, backoff_s=0.01), concurrency=1)
    gens = b.generate([Prompt((text(f"x{i}"),)) for i in range(3)], GenerationParams())
    assert server.hits == 6 and all(len(g.error) > 200 for g in gens)
    summary = failure_summary([{"prediction": {"error": g.error}} for g in gens])
    [reason] = summary["reasons"]
    assert summary["reasons"][reason] == 3
    assert reason.startswith(f"gave up after 2 attempts: HTTP 502 from {server.url}/chat/completions: upstream connect")


def test_a_connection_cut_mid_body_is_retried(server, tmp_path):
    server.script = [Reply(cut_after=20)]
    b = backend(server, tmp_path)
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert gen.error is None and gen.text == "<answer>B</answer>" and server.hits == 2 and len(b.cache) == 1
    server.script = [Reply(cut_after=20)] * 2
    b = backend(server, retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    (gen,) = b.generate([Prompt((text("y"),))], GenerationParams())
    assert gen.text is None and "IncompleteRead" in gen.error and "gave up after 2 attempts" in gen.error


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_is_not_followed_and_the_key_stays_with_the_base_url(server, monkeypatch, status):
    """urllib turns a redirected POST into a GET carrying every header: the key would go to the other host."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Elsewhere(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers))
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

    other = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    location = f"http://localhost:{other.server_address[1]}/v1/chat/completions"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.script = [Reply(status=status, headers={"Location": location})]
    try:
        (gen,) = backend(server).generate([Prompt((text("hi"),))], GenerationParams())
    finally:
        other.shutdown()
        other.server_close()
    assert seen == [] and server.hits == 1
    assert gen.text is None and gen.error == (f"HTTP {status} from {server.url}/chat/completions: "
                                              f"redirected to {location}, not followed (pass that URL instead)")


def test_timeout_then_success_and_timeout_for_good(server):
    server.script = [Reply(delay_s=0.6)]
    (gen,) = backend(server, timeout_s=0.2).generate([Prompt((text("x"),))], GenerationParams())
    assert gen.text == "<answer>B</answer>" and server.hits == 2
    server.script = [Reply(delay_s=0.6)] * 2
    b = backend(server, timeout_s=0.2, retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert gen.text is None and "within 0.2 s" in gen.error and "gave up after 2 attempts" in gen.error


def test_a_server_that_never_answers_holds_a_request_no_longer_than_its_deadline():
    """A hanging server held one request (max_retries + 1) * timeout_s plus the backoffs (about 12.5 minutes
    by default): request_deadline_s now caps all its attempts and backoffs, and the sample fails naming the
    attempts and the time taken."""
    import re
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections queue, and nothing is ever answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        b = OpenAIBackend(url, "m", timeout_s=0.4, request_deadline_s=1.0,
                          retry=RetryPolicy(max_retries=5, backoff_s=0.01, max_backoff_s=0.01))
        attempts = attempts_of(b)
        start = time.monotonic()
        (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
        took = time.monotonic() - start
    assert 0.95 <= took < 1.6  # 6 attempts of 0.4 s without the deadline
    found = re.fullmatch(rf"gave up after (\d) attempts in (\d\.\d) s \(request deadline 1 s\): "
                         rf"no answer from {re.escape(url)}/chat/completions within [0-9.]+ s", gen.error)
    assert found and 2 <= int(found[1]) == len(attempts) < 6 and 0.9 <= float(found[2]) <= took
    assert gen.text is None and "\n" not in gen.error


def test_an_attempt_started_near_the_deadline_gets_only_the_time_left():
    """A request deadline shorter than timeout_s ends the attempt in flight by the deadline (the attempt gets the
    time left), and a request's last attempt out of time says so, with the time it was given."""
    import re
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        b = OpenAIBackend(url, "m", timeout_s=5.0, request_deadline_s=0.5, retry=RetryPolicy(max_retries=0))
        attempts = attempts_of(b)
        start = time.monotonic()
        (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
        took = time.monotonic() - start
    assert 0.45 <= took < 1.5 and len(attempts) == 1  # 5 s without the deadline
    assert re.fullmatch(rf"gave up after 1 attempt in 0\.\d s \(request deadline 0\.5 s\): "
                        rf"no answer from {re.escape(url)}/chat/completions within 0\.[45]\d* s", gen.error), gen.error


def test_a_connect_that_hangs_past_the_request_deadline_names_the_time_the_attempt_had(monkeypatch):
    """A connect that never completes (a host dropping packets) times out at the deadline inside urllib, which
    wraps it in a URLError: its message gives the attempt's time (the deadline's), not timeout_s."""
    import re
    import socket

    def hanging_connect(self, address):
        time.sleep(self.gettimeout())
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket.socket, "connect", hanging_connect)
    b = OpenAIBackend("http://127.0.0.1:9/v1", "m", timeout_s=5.0, request_deadline_s=0.5, retry=RetryPolicy(max_retries=0))
    start = time.monotonic()
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert time.monotonic() - start < 1.5
    assert re.fullmatch(r"gave up after 1 attempt in 0\.\d s \(request deadline 0\.5 s\): "
                        r"no answer from http://127\.0\.0\.1:9/v1/chat/completions within 0\.[45]\d* s", gen.error), gen.error


def test_a_run_records_a_sample_whose_server_never_answers_as_failed_by_the_request_deadline(tmp_path):
    """The judge's request_deadline_s option reaches the backend: the run ends, the sample failed for that reason."""
    import socket

    from pigbench.runner import RunConfig, run

    with socket.create_server(("127.0.0.1", 0)) as silent:
        options = {"base_url": f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "timeout_s": "0.3",
                   "request_deadline_s": "0.8", "max_retries": "5"}
        start = time.monotonic()
        out = run(RunConfig(evaluator="openai-judge", dataset="toy", limit=1, options=options, output=None,
                            cache_dir=str(tmp_path / "cache"), progress=False, n_bootstrap=10, max_error_rate=1.0),
                  log=lambda m: None)
    assert time.monotonic() - start < 3  # 6 attempts of 0.3 s each, and the backoffs, without the deadline
    (reason,) = out.results["failures"]["reasons"]
    assert reason.startswith("gave up after ") and " s (request deadline 0.8 s): no answer from " in reason


def test_no_backoff_is_waited_out_past_the_request_deadline(server):
    server.reply = lambda body: Reply(status=503)
    b = backend(server, request_deadline_s=1.0, retry=RetryPolicy(max_retries=3, backoff_s=30, max_backoff_s=30))
    start = time.monotonic()
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert time.monotonic() - start < 0.9 and server.hits == 1  # the 15-30 s backoff would end past the deadline
    assert gen.error.startswith("gave up after 1 attempt in 0.") and "(request deadline 1 s): HTTP 503" in gen.error
    with pytest.raises(ValueError, match="request_deadline_s must be > 0"):
        backend(server, request_deadline_s=0)


def test_timeout_is_a_deadline_for_a_body_that_trickles_in(server):
    server.script = [Reply(drip_s=0.001)]  # a whole answer, a byte at a time, well in time
    (gen,) = backend(server, timeout_s=2).generate([Prompt((text("x"),))], GenerationParams())
    assert gen.text == "<answer>B</answer>" and server.hits == 1
    server.script = [Reply(drip_s=0.1)] * 2  # a byte every 0.1 s: each read is quick, the body takes ~7 s
    b = backend(server, timeout_s=0.5, retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    start = time.monotonic()
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert 1.0 <= time.monotonic() - start < 1.5  # two attempts of 0.5 s each
    assert gen.text is None and "within 0.5 s" in gen.error and "gave up after 2 attempts" in gen.error


def test_timeout_is_a_deadline_for_a_status_line_and_headers_that_trickle_in(server):
    """A sick server or proxy dripping its headers a byte every 0.05 s (each read well within
    timeout_s) used to hold an attempt for the whole ~5 s of headers."""
    server.script = [Reply(drip_s=0.001, drip_headers=True)]  # a whole answer, a byte at a time, in time
    (gen,) = backend(server, timeout_s=2).generate([Prompt((text("x"),))], GenerationParams())
    assert gen.text == "<answer>B</answer>" and server.hits == 1
    server.script = [Reply(drip_s=0.05, drip_headers=True)]
    b = backend(server, timeout_s=0.3, retry=RetryPolicy(max_retries=0))
    start = time.monotonic()
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert time.monotonic() - start < 0.9  # one attempt of 0.3 s, with slack
    assert gen.text is None and gen.error == (f"gave up after 1 attempt: no answer from "
                                              f"{server.url}/chat/completions within 0.3 s")


def test_timeout_is_a_deadline_for_a_dns_lookup_that_hangs(server, monkeypatch):
    """A resolver that does not answer used to hold the attempt for as long as it hung (the lookup
    inside socket.create_connection had no time limit); a lookup is now held to the deadline, and
    one that times out is a connection failure naming the host, retried like any other."""
    import socket
    import threading

    real, release, calls = socket.getaddrinfo, threading.Event(), []

    def hangs_once(host, *args, **kwargs):
        calls.append(host)
        if len(calls) == 1:
            release.wait(10)  # a resolver that hangs (until the test ends)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hangs_once)
    b = backend(server, timeout_s=0.3, retry=RetryPolicy(max_retries=0))
    start = time.monotonic()
    try:
        (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
        assert time.monotonic() - start < 0.9  # one attempt of 0.3 s, with slack
        assert gen.text is None and server.hits == 0
        assert gen.error == (f"gave up after 1 attempt: cannot reach {server.url}/chat/completions: looking up "
                             "127.0.0.1 took longer than the 0.3 s left of the attempt")
        calls.clear()
        (gen,) = backend(server, timeout_s=0.3).generate([Prompt((text("x"),))], GenerationParams())
        assert gen.text == "<answer>B</answer>" and server.hits == 1 and len(calls) == 2  # retried
    finally:
        release.set()


def test_a_host_that_does_not_resolve_is_a_connection_failure_naming_it(monkeypatch):
    """The lookup runs in a thread: its error (an unknown host) is raised, not taken for addresses."""
    import socket

    def unknown(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    b = OpenAIBackend("http://judge.invalid/v1", "m", timeout_s=5, retry=RetryPolicy(max_retries=0))
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert gen.error == ("gave up after 1 attempt: cannot reach http://judge.invalid/v1/chat/completions: "
                         "[Errno -2] Name or service not known")


def test_a_connect_waits_no_longer_than_the_attempt(server, monkeypatch):
    """The socket connects with the time left as its timeout, so a peer that never answers the SYN
    cannot hold the attempt."""
    import socket

    real, seen = socket.socket.connect, []

    def connect(self, address):
        seen.append(self.gettimeout())
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    (gen,) = backend(server, timeout_s=0.5).generate([Prompt((text("x"),))], GenerationParams())
    assert gen.text == "<answer>B</answer>" and seen and all(t is not None and 0 < t <= 0.5 for t in seen)


@contextlib.contextmanager
def stalling_peer(answer=b"", drip_s=0.0):
    """A TCP listener on 127.0.0.1 (yields its port) that reads what comes up to a blank line when it
    has an ``answer`` to give, sends the answer a byte every ``drip_s`` s, then goes silent: a TLS
    server or an HTTPS proxy that stalls."""
    import socket
    import threading

    listener, done, peers = socket.create_server(("127.0.0.1", 0)), threading.Event(), []

    def serve():
        while not done.is_set():
            try:
                peer, _ = listener.accept()
            except OSError:
                return
            peers.append(peer)
            received = b""
            while answer and b"\r\n\r\n" not in received and not done.is_set():
                chunk = peer.recv(4096)
                if not chunk:  # the client went away
                    break
                received += chunk
            for byte in answer:
                if done.wait(drip_s):
                    return
                peer.sendall(bytes([byte]))

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        listener.close()
        for peer in peers:
            peer.close()


def test_timeout_is_a_deadline_for_a_tls_handshake_after_a_slow_connect(monkeypatch):
    """The handshake's waits were capped at the time left when connecting began: a connect taking
    0.4 s of a 0.6 s attempt, then a server stalling the handshake, held the attempt ~1 s."""
    import socket

    real = socket.socket.connect

    def slow_connect(self, address):
        time.sleep(0.4)
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", slow_connect)
    with stalling_peer() as port:
        b = OpenAIBackend(f"https://127.0.0.1:{port}/v1", "m", timeout_s=0.6, retry=RetryPolicy(max_retries=0))
        start = time.monotonic()
        (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
        assert time.monotonic() - start < 0.8
    assert gen.error == (f"gave up after 1 attempt: no answer from https://127.0.0.1:{port}/v1/chat/completions "
                         "within 0.6 s")


def test_timeout_is_a_deadline_for_an_https_proxys_connect_answer_that_trickles_in(monkeypatch):
    """An HTTPS proxy dripping its answer to CONNECT a byte every 0.05 s (each read well within
    timeout_s) used to hold a 0.3 s attempt for the whole ~2 s of the answer, then the handshake."""
    with stalling_peer(b"HTTP/1.1 200 Connection established\r\n\r\n", drip_s=0.05) as port:
        for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
        b = OpenAIBackend("https://judge.invalid/v1", "m", timeout_s=0.3, retry=RetryPolicy(max_retries=0))
        start = time.monotonic()
        (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
        assert time.monotonic() - start < 0.8  # one attempt of 0.3 s, with slack
    assert gen.error == "gave up after 1 attempt: no answer from https://judge.invalid/v1/chat/completions within 0.3 s"


def test_a_send_or_a_read_once_the_deadline_passed_is_a_timeout():
    """Sends are held to the deadline as reads are; a wait begun after it is a TimeoutError (retried),
    not a ValueError from a negative socket timeout."""
    import socket

    from pigbench.judging.openai_backend import _DeadlineSocket

    a, b = socket.socketpair()
    with a, b:
        late = _DeadlineSocket(a, time.monotonic() - 0.01)
        with pytest.raises(TimeoutError):
            late.sendall(b"x")
        b.sendall(b"y")
        with pytest.raises(TimeoutError):
            late.makefile("rb").read(1)


def test_a_tls_connection_cut_while_the_body_arrives_is_retried(server, monkeypatch):
    """An ssl.SSLError (an OSError, not a ConnectionError) from a proxy that drops TLS mid-body."""
    import ssl

    from pigbench.judging import openai_backend

    real, calls = openai_backend._read_by, []

    def cut_once(resp, deadline):
        calls.append(1)
        if len(calls) == 1:
            raise ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
        return real(resp, deadline)

    monkeypatch.setattr(openai_backend, "_read_by", cut_once)
    (gen,) = backend(server).generate([Prompt((text("x"),))], GenerationParams())
    assert gen.text == "<answer>B</answer>" and server.hits == 2


def test_a_backend_that_could_never_answer_is_refused(server):
    for timeout_s in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout_s must be > 0"):
            OpenAIBackend(server.url, "m", timeout_s=timeout_s)
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)  # no attempt at all


def test_a_dead_server_fails_over_to_the_next(server):
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    b = OpenAIBackend([dead, server.url], "m", retry=FAST, concurrency=1)
    attempts = attempts_of(b)
    gens = b.generate([Prompt((text(str(i)),)) for i in range(4)], GenerationParams())
    assert all(g.text == "<answer>B</answer>" for g in gens)
    assert server.hits == 4 and len(attempts) == 5  # prompt 0 tried the dead URL, then it was down
    assert attempts[0].startswith(dead) and not any(u.startswith(dead) for u in attempts[1:])


def test_a_retry_that_another_server_can_take_does_not_wait_for_the_backoff(server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    b = OpenAIBackend([dead, server.url], "m", retry=RetryPolicy(max_retries=2, backoff_s=2, max_backoff_s=2))
    attempts = attempts_of(b)
    start = time.monotonic()
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert gen.text == "<answer>B</answer>" and len(attempts) == 2 and time.monotonic() - start < 0.9


def test_an_interrupt_stops_the_retries_and_the_waiting_prompts_at_once(server, monkeypatch):
    """Ctrl-C while a server fails: generate used to wait for every worker to run out of retries (up to
    max_retries backoffs and timeouts each) and for the prompts queued behind them."""
    import threading

    from pigbench.judging import openai_backend

    server.reply = lambda body: Reply(status=503)
    b = backend(server, concurrency=2, retry=RetryPolicy(max_retries=5, backoff_s=30, max_backoff_s=30))
    backing_off = threading.Barrier(3)  # both workers in their backoff, and the test
    real_delay = RetryPolicy.delay

    def delay_noting_the_backoff(policy, *args):
        backing_off.wait(timeout=5)
        return real_delay(policy, *args)

    monkeypatch.setattr(RetryPolicy, "delay", delay_noting_the_backoff)

    def interrupt_once_both_back_off(pool_map):
        def mapped(self, fn, *iterables, **kw):
            pool_map(self, fn, *iterables, **kw)  # submits every prompt
            backing_off.wait(timeout=5)
            raise KeyboardInterrupt  # what Ctrl-C raises in the waiting main thread
        return mapped

    monkeypatch.setattr(openai_backend.ThreadPoolExecutor, "map",
                        interrupt_once_both_back_off(openai_backend.ThreadPoolExecutor.map))
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        b.generate([Prompt((text(str(i)),)) for i in range(6)], GenerationParams())
    assert time.monotonic() - start < 5
    workers = [t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")]
    for t in workers:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in workers)
    assert server.hits == 2  # the first attempt of the two prompts started; no retry, no other prompt


def test_an_interrupt_during_an_attempt_retries_on_no_other_server(server):
    """With several servers a failed attempt is retried on another at once, without a backoff: an
    interrupt that came during the attempt must end the request there, not start an attempt elsewhere."""
    import threading

    from pigbench.judging.openai_backend import RequestFailed, _Retryable

    b = OpenAIBackend([server.url, server.url + "/other"], "test-model", retry=FAST)
    stop, attempts = threading.Event(), []

    def failing_while_interrupted(url, data, deadline):
        attempts.append(url)
        stop.set()  # Ctrl-C arrives while this attempt is in flight
        raise _Retryable("HTTP 503")

    b._post = failing_while_interrupted
    with pytest.raises(RequestFailed, match="interrupted"):
        b._post_with_retries(b"{}", stop)
    assert len(attempts) == 1 and b.pool.any_up()  # the other server was free, and still got nothing


def test_concurrency_is_bounded(server):
    server.script = [Reply(delay_s=0.2)] * 8
    b = backend(server, concurrency=2)
    start = time.monotonic()
    b.generate([Prompt((text(str(i)),)) for i in range(6)], GenerationParams())
    assert time.monotonic() - start >= 0.55  # 6 requests of 0.2 s, 2 at a time


@pytest.mark.parametrize("batch_size, peak", [(2, 2), (6, 6)])
def test_the_runners_batch_size_bounds_the_requests_in_flight(server, tmp_path, batch_size, peak):
    """As docs/scaling.md says: concurrency=8 has at most --batch-size requests in flight."""
    import threading

    from pigbench.runner import predict_batches

    lock, active, seen = threading.Lock(), [0], []

    def slow(body):
        with lock:
            active[0] += 1
            seen.append(active[0])
        time.sleep(0.25)
        with lock:
            active[0] -= 1
        return "<answer>A</answer>"

    server.reply = slow
    j = judge(server, tmp_path, concurrency=8)
    list(predict_batches(j, [episode(i) for i in range(6)], batch_size))
    assert max(seen) == peak


def test_resume_sends_no_request_twice(server, tmp_path):
    episodes = [episode(i) for i in range(4)]
    first = judge(server, tmp_path).predict(episodes[:2])  # a run killed after two samples
    assert server.hits == 2
    resumed = judge(server, tmp_path).predict(episodes)  # a new process, same cache file
    assert server.hits == 4  # only the two new samples were sent
    again = judge(server, tmp_path).predict(episodes)
    assert server.hits == 4
    assert [p.to_json() for p in resumed[:2]] == [p.to_json() for p in first]
    assert [p.to_json() for p in again] == [p.to_json() for p in resumed]


def test_the_cache_reuses_an_answer_only_for_the_same_request(server, tmp_path):
    """Another prompt text, image, model, length, temperature, seed or option set is another request."""
    server.reply = lambda body: request_key(body)  # each request its own answer
    base, params = Prompt((text("x"), image(png("i")))), GenerationParams()
    variants = [(base, params, "test-model"), (Prompt((text("y"), image(png("i")))), params, "test-model"),
                (Prompt((text("x"), image(png("i", (1, 2, 3))))), params, "test-model"), (base, params, "other-model"),
                (base, GenerationParams(max_new_tokens=17), "test-model"), (base, GenerationParams(temperature=0.5), "test-model"),
                (base, GenerationParams(seed=1), "test-model"), (base, GenerationParams(options=("A", "B")), "test-model")]
    rounds = []
    for _ in range(2):
        answers = []
        for prompt, p, model in variants:
            b = backend(server, tmp_path)
            b.model = model
            answers.append(b.generate([prompt], p)[0].text)
            b.close()
        rounds.append(answers)
    assert len(set(rounds[0])) == len(variants) and rounds[1] == rounds[0]
    assert server.hits == len(variants)  # the second round is answered from the cache, each with its own answer


@pytest.mark.parametrize("damaged", ["{not json", '{"no": "choices"}'])
def test_a_damaged_cached_response_is_requested_again(server, tmp_path, damaged):
    episodes = [episode(0), episode(1)]
    first = judge(server, tmp_path).predict(episodes)
    db = sqlite3.connect(tmp_path / "requests.sqlite")
    db.execute("UPDATE responses SET response = ? WHERE rowid = (SELECT MIN(rowid) FROM responses)", (damaged,))
    db.commit()
    db.close()
    again = judge(server, tmp_path).predict(episodes)
    assert server.hits == 3 and [p.to_json() for p in again] == [p.to_json() for p in first]
    judge(server, tmp_path).predict(episodes)
    assert server.hits == 3  # the answer sent again was cached in place of the damaged one


def test_an_answer_cut_at_max_tokens_is_invalid_also_from_the_cache(server, tmp_path):
    """finish_reason "length" marks the generation truncated; the cached response keeps it."""
    cut = "The user likes warm tones.\nImage A uses warm tones, while"
    server.reply = lambda body: Reply(cut, finish_reason="length")
    first = judge(server, tmp_path, reason=True).predict([episode(0)])
    again = judge(server, tmp_path, reason=True).predict([episode(0)])
    assert server.hits == 1
    for (pred,) in (first, again):
        assert pred.label == Label.INVALID and pred.raw_text == cut and pred.error is None
        assert pred.extra["invalid_reason"] == "output cut at max_new_tokens before its answer"
        assert pred.extra["truncated"] is True


def test_a_server_answering_with_another_model_is_recorded_with_the_prediction(server, tmp_path):
    """A proxy routing to another checkpoint shows in extra["served"], also from the cache."""
    choice = {"message": {"content": "<answer>A</answer>"}, "finish_reason": "stop"}
    server.script = [Reply(raw=json.dumps({"model": "other-ckpt", "system_fingerprint": "fp_1", "choices": [choice]}))]
    first = judge(server, tmp_path).predict([episode(0)])
    again = judge(server, tmp_path).predict([episode(0)])
    assert server.hits == 1
    for (pred,) in (first, again):
        assert pred.label == Label.A and pred.extra["served"] == {"model": "other-ckpt", "system_fingerprint": "fp_1"}
    server.script = [Reply(raw=json.dumps({"model": "test-model", "system_fingerprint": None, "choices": [choice]}))]
    (pred,) = judge(server, tmp_path).predict([episode(1)])
    assert pred.label == Label.A and "served" not in pred.extra  # the model asked for, no fingerprint


def test_a_cached_response_without_finish_reason_reads_as_before(server, tmp_path):
    """Cache entries written before finish reasons were read: not truncated, no request sent."""
    j = judge(server, tmp_path)
    key = request_key(j.backend.request_body(j.build_prompt(episode(0)), j.generation_params()))
    j.backend.cache.put(key, {"choices": [{"message": {"content": "Image A, clearly."}}]})
    (pred,) = j.predict([episode(0)])
    assert server.hits == 0 and pred.label == Label.A and "truncated" not in pred.extra


def test_a_refusal_is_kept_as_the_raw_text_and_counted_as_a_refused_answer(server, tmp_path):
    """OpenAI's message.refusal (content null) read as "empty output"; the refusal text is now the
    raw text and the INVALID answer's reason quotes its start, also from the cache, and counts in
    answer quality. It is never read for a verdict, though it names an image."""
    from pigbench.results import answer_quality

    refusal = "I'm sorry, but I can't compare Image A and Image B:\n  they may show a real person's face."
    server.script = [Reply(raw=json.dumps({"choices": [{"message": {"content": None, "refusal": refusal},
                                                        "finish_reason": "stop"}]}))]
    first = judge(server, tmp_path).predict([episode(0)])
    again = judge(server, tmp_path).predict([episode(0)])
    assert server.hits == 1
    reason = 'the model refused: "I\'m sorry, but I can\'t compare Image A and Image B: they may..."'
    for (pred,) in (first, again):
        assert pred.label == Label.INVALID and pred.error is None and pred.raw_text == refusal
        assert pred.extra["invalid_reason"] == reason
    rows = [{"prediction": {"extra": pred.extra}} for (pred,) in (first, again)]
    assert answer_quality(rows)["unparseable_reasons"] == {reason: 2}
    server.script = [Reply(raw=json.dumps({"choices": [{"message": {"content": "<answer>A</answer>", "refusal": None}}]}))]
    (pred,) = judge(server, tmp_path).predict([episode(1)])
    assert pred.label == Label.A and "invalid_reason" not in pred.extra
    # a refusal is read only when there is no content: an answer sent with a refusal string is the answer
    server.script = [Reply(raw=json.dumps({"choices": [{"message": {"content": "<answer>B</answer>",
                                                                    "refusal": "I'd rather not."}}]}))]
    (pred,) = judge(server, tmp_path).predict([episode(2)])
    assert pred.label == Label.B and pred.raw_text == "<answer>B</answer>" and "invalid_reason" not in pred.extra


def test_answer_probabilities_from_top_logprobs(server, tmp_path):
    top = [{"token": "A", "logprob": math.log(0.6)}, {"token": "B", "logprob": math.log(0.3)}]
    logprobs = [{"token": "<answer>", "logprob": 0.0, "top_logprobs": []},
                {"token": "A", "logprob": math.log(0.6), "top_logprobs": top},
                {"token": "</answer>", "logprob": 0.0, "top_logprobs": []}]
    server.reply = lambda body: Reply("<answer>A</answer>", logprobs=logprobs)
    (pred,) = judge(server, tmp_path, scoring="probs", tie_threshold=0.2).predict([episode(0)])
    assert server.requests[0]["logprobs"] is True and server.requests[0]["top_logprobs"] == 20
    assert pred.score_a == pytest.approx(2 / 3) and pred.score_b == pytest.approx(1 / 3)
    assert pred.label == Label.TIE  # protocol section 3: delta = P(A) - 0.5 = 1/6 <= tau (P(A) - P(B) = 1/3 is not)


def test_another_tie_threshold_reuses_the_cached_responses(server, tmp_path):
    """tau only turns P(A) into a label: a calibrated or re-thresholded run sends no request again."""
    cls = evaluators.get("openai-judge")
    for tau in (0.0, 0.2):
        j = cls(cls.Config(base_url=server.url, scoring="probs", tie_threshold=tau), Runtime(cache_dir=str(tmp_path)))
        j.setup()
        j.predict([episode(0), episode(1)])
        assert server.hits == 2
    assert len(list((tmp_path / "requests").glob("*.sqlite"))) == 1


def test_unreadable_image_fails_only_its_prompt(server):
    bad = Prompt((text("x"), image(ImageRef("broken.jpg", b"\x00garbage"))))
    gens = backend(server).generate([bad, Prompt((text("ok"),))], GenerationParams())
    assert "broken.jpg" in gens[0].error and gens[1].text == "<answer>B</answer>" and server.hits == 1


def test_runner_end_to_end_keeps_the_key_out_of_every_file(server, tmp_path, monkeypatch, capsys):
    from pigbench.runner import RunConfig, run

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("PIGBENCH_CACHE", raising=False)
    server.reply = lambda body: "<answer>A</answer>" if len(body["messages"][0]["content"]) % 2 else "<answer>B</answer>"
    cfg = RunConfig(evaluator="openai-judge", dataset="toy", limit=6, batch_size=4, swap=True,
                    options={"base_url": server.url}, output=str(tmp_path / "results"),
                    cache_dir=str(tmp_path / "cache"), progress=False, n_bootstrap=10)
    monkeypatch.chdir(tmp_path)  # anything written to the working directory is checked below too
    out = run(cfg)
    assert server.hits == 12 and out.results["metrics"]["n"] == 6
    assert len(list((tmp_path / "cache" / "requests").glob("openai-judge-*.sqlite"))) == 1  # the run's cache dir
    assert out.results["evaluator"]["models"]["base_urls"] == [server.url]
    for runs in (tmp_path / "cache" / "runs").glob("*.sqlite*"):  # kill: lose the run store, keep the request cache
        runs.unlink()
    again = run(cfg)
    assert server.hits == 12 and again.computed == 6  # recomputed from cached responses, nothing re-sent
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err


def test_a_new_judge_version_predicts_again_from_the_cached_responses(server, tmp_path, monkeypatch):
    """The version says how answers are read (a parser fix bumps it): stored predictions are made
    again, but from the request cache, so no request is sent twice (the file name leaves it out)."""
    from pigbench.runner import RunConfig, run

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = RunConfig(evaluator="openai-judge", dataset="toy", limit=4, options={"base_url": server.url},
                    output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), progress=False, n_bootstrap=10)
    first = run(cfg, log=lambda m: None)
    assert server.hits == 4 and first.computed == 4
    monkeypatch.setattr(evaluators.get("openai-judge"), "version", "99")
    again = run(cfg, log=lambda m: None)
    assert again.computed == 4 and again.resumed == 0  # another run key
    assert server.hits == 4  # every answer came from the request cache


def test_a_damaged_request_cache_file_is_a_one_line_error(server, tmp_path, capsys):
    from pigbench.run import cli

    cls = evaluators.get("openai-judge")
    path = tmp_path / "cache" / "requests" / f"openai-judge-{cls.Config().hash('openai-judge', '')}.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage" * 1000)
    code = cli(["--evaluator", "openai-judge", "--dataset", "toy", "--limit", "2", "--option", f"base_url={server.url}",
                "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 2 and server.hits == 0
    assert capsys.readouterr().err == (f"error: request cache {path} cannot be read (file is not a database); "
                                       "delete it; its responses will be requested again\n")


def test_official_api_without_key_is_a_requirement_error(monkeypatch):
    from pigbench.evaluator import RequirementError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    cls = evaluators.get("openai-judge")
    with pytest.raises(RequirementError, match="OPENAI_API_KEY"):
        cls.check_requirements(cls.Config())
    cls.check_requirements(cls.Config(base_url="http://127.0.0.1:9/v1"))  # local servers need no key


def test_where_to_reach_the_model_does_not_change_the_config_hash():
    cls = evaluators.get("openai-judge")
    base = cls(cls.Config()).config_hash
    assert cls(cls.Config(base_url="http://a/v1,http://b/v1", concurrency=64, timeout_s=5,
                          request_deadline_s=60)).config_hash == base
    assert cls(cls.Config(model_path="gpt-4o-mini")).config_hash != base
    assert cls(cls.Config(max_pixels=1000)).config_hash != base


def test_server_address_and_concurrency_keep_the_run_in_its_results_file(server, tmp_path, monkeypatch):
    """Fields left out of the config hash reuse the stored predictions and must write the same file."""
    from pigbench.runner import RunConfig, run

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    base = dict(evaluator="openai-judge", dataset="toy", limit=4, output=str(tmp_path / "results"),
                cache_dir=str(tmp_path / "cache"), progress=False, n_bootstrap=10)
    first = run(RunConfig(**base))
    served = run(RunConfig(**base, options={"base_url": server.url, "concurrency": "2", "timeout_s": "30"}))
    assert served.resumed == 4 and served.computed == 0  # the same run ...
    assert served.results_path == first.results_path  # ... in the same file
    assert first.results_path.name == "openai-judge__limit4.json"
    assert sorted(p.name for p in (tmp_path / "results" / "toy").glob("*.json")) == ["openai-judge__limit4.json"]
    other = run(RunConfig(**base, options={"temperature": "0.5"}))  # a field of the hash: another run, another file
    assert other.computed == 4 and other.results_path.name.startswith("openai-judge__cfg")


def test_the_body_carries_each_image_in_place_the_system_line_and_every_decoding_parameter(server):
    """Images swapped or reordered would flip A and B; a dropped system line, seed or min_tokens
    changes what the server generates."""
    import base64

    imgs = [png(f"i{k}", (40 * k, 0, 255 - 40 * k)) for k in range(4)]
    prompt = Prompt((text("Preferred:"), image(imgs[0]), text("Rejected:"), image(imgs[1]),
                     text("Image A:"), image(imgs[2]), text("Image B:"), image(imgs[3])), system="Be a judge.")
    params = GenerationParams(max_new_tokens=64, min_new_tokens=8, temperature=0.7, seed=11)
    body = backend(server).request_body(prompt, params)
    system, user = body["messages"]
    assert system == {"role": "system", "content": "Be a judge."} and user["role"] == "user"
    sent = [base64.b64decode(c["image_url"]["url"].split(",", 1)[1]) for c in user["content"]
            if c["type"] == "image_url"]
    assert sent == [ref.read_bytes() for ref in imgs]
    assert [c["type"] for c in user["content"]] == ["text", "image_url"] * 4
    assert (body["max_tokens"], body["min_tokens"], body["temperature"], body["seed"]) == (64, 8, 0.7, 11)


def test_retry_after_sets_the_wait_before_the_retry(server):
    """A rate-limited server's Retry-After (seconds) is waited out, not the far shorter backoff."""
    server.script = [Reply(status=429, headers={"Retry-After": "0.4"})]
    b = backend(server, retry=RetryPolicy(max_retries=1, backoff_s=0.01, max_backoff_s=5))
    start = time.monotonic()
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert 0.4 <= time.monotonic() - start < 1.5
    assert gen.text == "<answer>B</answer>" and server.hits == 2


def test_retry_after_as_an_http_date_sets_the_wait_before_the_retry(server):
    """RFC 9110 allows Retry-After as an HTTP date: it is waited out like delay-seconds."""
    server.script = [Reply(status=503, headers={"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)})]
    b = backend(server, retry=RetryPolicy(max_retries=1, backoff_s=0.01, max_backoff_s=5))
    start = time.monotonic()
    (gen,) = b.generate([Prompt((text("x"),))], GenerationParams())
    assert 1.0 <= time.monotonic() - start < 3.5  # the date has whole seconds
    assert gen.text == "<answer>B</answer>" and server.hits == 2


def test_retry_after_readings():
    assert _retry_after({"Retry-After": "7"}) == 7.0
    assert _retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}) == 0.0  # already past
    assert _retry_after({"Retry-After": "soon"}) is None and _retry_after({}) is None
    assert _retry_after({"Retry-After": "Mon, 01 Jan 99999999999 00:00:00 GMT"}) is None  # no datetime holds that year


def test_a_broken_json_answer_is_retried_and_content_parts_are_joined(server):
    server.script = [Reply(raw='{"choices": [{"mess'),
                     Reply(raw=json.dumps({"choices": [{"message": {"content": [
                         {"type": "text", "text": "I pick "}, {"type": "text", "text": "<answer>A</answer>"}]}}]}))]
    (gen,) = backend(server).generate([Prompt((text("x"),))], GenerationParams())
    assert gen.error is None and gen.text == "I pick <answer>A</answer>" and server.hits == 2
