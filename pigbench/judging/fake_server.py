"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, the weight-free stand-in that lets
tests and benchmarks exercise the HTTP path of the served backends.

Contract of :class:`FakeServer`:

* It listens on ``127.0.0.1`` on an ephemeral port from construction until :meth:`close` (or the
  end of its ``with`` block); ``url`` is its base URL (``http://127.0.0.1:PORT/v1``). Any POST path
  is treated as ``/chat/completions``.
* Each request is answered by the first entry of ``script`` (one-off :class:`Reply` values consumed
  in order), else by ``reply(body)``, which returns the assistant's text or a :class:`Reply`. A
  scripted 200 reply with neither ``content`` nor ``raw`` takes its content from ``reply(body)``.
  A 200 answer's choice carries the reply's ``finish_reason`` (``"length"``: cut at ``max_tokens``).
* Every request waits ``latency_s`` while holding one of ``slots`` processing slots (unbounded when
  ``None``), then its reply's ``delay_s``. A reply with ``drip_s`` sends its status line and headers
  at once (a byte at a time too with ``drip_headers``), then its body one byte every ``drip_s`` seconds.
  A reply with ``cut_after`` sends its status line, headers (with the whole body's ``Content-Length``)
  and that many bytes of its body, then closes the connection.
* ``requests`` and ``headers`` record every request received (``hits`` counts them); ``answered``
  counts the requests answered per ``key(body)`` (by default the request cache's key).
* With ``die_after``, the server dies once that many requests are answered: it stops listening, and
  requests in flight and later get their connection closed with no answer (``dropped`` counts
  them, ``dead`` is set). A reply with ``drop=True`` closes one connection the same way.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Optional, Union

from pigbench.judging.request_cache import request_key


@dataclass(frozen=True)
class Reply:
    """How to answer one request. A status other than 200 sends ``{"error": {"message": content}}``
    (``"status N"`` when content is None); ``raw`` is a body sent as is instead, whatever the status."""

    content: Optional[str] = None
    status: int = 200
    delay_s: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: Optional[str] = None
    logprobs: Optional[list[dict[str, Any]]] = None
    drop: bool = False
    drip_s: float = 0.0
    drip_headers: bool = False
    finish_reason: str = "stop"
    cut_after: Optional[int] = None


ReplyFn = Callable[[dict[str, Any]], Union[str, Reply]]


def request_texts(body: Mapping[str, Any]) -> list[str]:
    """The text parts of every message of a chat-completions request, in order."""
    return [p["text"] for m in body["messages"]
            for p in (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}]) if "text" in p]


def keyed_verdict(body: Mapping[str, Any]) -> str:
    """A judge's answer decided by the request: the same request always gets the same verdict."""
    return f"<answer>{'AB'[int(request_key(body), 16) % 2]}</answer>"


class FakeServer:
    """See the module docstring for the contract."""

    def __init__(self, reply: ReplyFn, *, latency_s: float = 0.0, slots: Optional[int] = None,
                 die_after: Optional[int] = None, key: Callable[[dict[str, Any]], str] = request_key) -> None:
        self.reply, self.key, self.die_after = reply, key, die_after
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answered: Counter = Counter()
        self.dropped = 0
        self.dead = self._closed = False
        self._lock = threading.Lock()
        gate = threading.Semaphore(slots) if slots else contextlib.nullcontext()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = server._receive(body, dict(self.headers))
                with gate:
                    time.sleep(latency_s)
                time.sleep(answer.delay_s)
                if server._drops(body, answer):
                    return  # the connection closes with no answer
                if answer.raw is not None:
                    payload = answer.raw
                elif answer.status == 200:
                    choice: dict[str, Any] = {"message": {"role": "assistant", "content": answer.content},
                                              "finish_reason": answer.finish_reason}
                    if answer.logprobs:
                        choice["logprobs"] = {"content": answer.logprobs}
                    payload = json.dumps({"choices": [choice]})
                else:
                    message = answer.content if answer.content is not None else f"status {answer.status}"
                    payload = json.dumps({"error": {"message": message}})
                headers = {**answer.headers, "Content-Type": "application/json",
                           "Content-Length": str(len(payload.encode()))}
                head = b""
                try:
                    if answer.drip_headers:  # written by hand below, to drip with the body
                        status = f"{self.protocol_version} {answer.status} {http.client.responses.get(answer.status, '')}"
                        lines = [status, *(f"{name}: {value}" for name, value in headers.items()), "", ""]
                        head = "\r\n".join(lines).encode()
                    else:
                        self.send_response(answer.status)
                        for name, value in headers.items():
                            self.send_header(name, value)
                        self.end_headers()
                    if answer.cut_after is not None:
                        self.wfile.write(head + payload.encode()[:answer.cut_after])
                        self.close_connection = True  # the connection ends short of Content-Length
                    elif answer.drip_s:
                        for byte in head + payload.encode():
                            time.sleep(answer.drip_s)
                            self.wfile.write(bytes([byte]))
                    else:
                        self.wfile.write(head + payload.encode())
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def hits(self) -> int:
        """Requests received so far, answered or not."""
        return len(self.requests)

    def _receive(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            step = self.script.pop(0) if self.script else None
        if step is not None and not (step.status == 200 and step.content is None and step.raw is None):
            return step
        answer = self.reply(body)
        answer = answer if isinstance(answer, Reply) else Reply(answer)
        return answer if step is None else replace(step, content=answer.content, logprobs=answer.logprobs)

    def _drops(self, body: dict[str, Any], answer: Reply) -> bool:
        """Whether this request goes unanswered; counts it as answered or dropped, dying on cue."""
        with self._lock:
            if not self.dead and self.die_after is not None and self.answered.total() >= self.die_after:
                self.dead = True
                threading.Thread(target=self.close).start()
            if self.dead or answer.drop:
                self.dropped += 1
                return True
            self.answered[self.key(body)] += 1
            return False

    def close(self) -> None:
        """Stop listening (once; later calls do nothing)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
