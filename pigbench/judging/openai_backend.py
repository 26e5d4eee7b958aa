"""OpenAI-compatible chat-completions backend (OpenAI, vLLM, SGLang, ...), standard library only.

* Images travel as base64 data URLs (the original file when the image policy leaves it as is).
  Text parts end with a newline unless last, as in the local backend: served chat templates
  (Qwen2-VL's, as a vLLM server applies it) join a turn's parts as they are.
* The API key is read from an environment variable (``OPENAI_API_KEY`` unless told otherwise) and
  is only ever placed in the ``Authorization`` header: it is in no request body, cache key, error
  message, provenance record or log line.
* Up to ``concurrency`` requests are in flight. ``timeout_s`` is a deadline per attempt: looking the
  host up, connecting, sending the request and reading the status line, headers and body must all be done ``timeout_s``
  after the attempt began, however slowly the bytes come (each socket wait is capped at the time
  left, an HTTPS proxy's answer to CONNECT included; a TLS handshake at the time left when it begins). HTTP 408, 429, 5xx,
  timeouts, connection failures and a 200 answer that is not JSON or has no ``choices[0].message``
  are retried with exponential backoff and jitter (a ``Retry-After``
  header, in seconds or an HTTP date, is honoured up to ``max_backoff_s``); other HTTP errors fail the request at once, and so
  does a redirect: it is never followed (urllib would resend the request as a GET, with the API key,
  to wherever it points). A request that fails for good has the error "gave up after N attempts: " and
the last failure (the count first: failures are counted by the start of their error). ``request_deadline_s`` caps
  one request, all its attempts and backoffs together: no attempt runs past it (an attempt started near it gets
  the time left) and no backoff that would reach it is waited out; a request out of time fails with
  "gave up after N attempts in T s (request deadline D s): " and the last failure, so a server that never answers
  holds a sample that long, not ``(max_retries + 1) * timeout_s`` plus the backoffs.
  An interrupt (Ctrl-C) ends the retries and backoffs at once and starts no other request; an attempt in flight
  ends by its deadline.
* ``base_urls`` is a list (or a comma-separated string, or a JSON list): a
  :class:`~pigbench.judging.server_pool.ServerPool` sends each attempt to the server with the fewest
  requests in flight; a server that fails is down for a cool-off, and its requests are retried on
  the others at once (the backoff applies only when every server is down).
* With a :class:`~pigbench.judging.request_cache.RequestCache`, a request already answered is never
  sent again (resumed runs pay nothing twice).
* A choice whose ``finish_reason`` is ``"length"`` was cut at ``max_tokens``: its generation is
  ``truncated``. A response's ``model``, when not the model asked for, and its ``system_fingerprint``
  go to the generation's ``served``. The cache stores whole responses, so a cached answer keeps its finish reason; one
  stored without it counts as not truncated.
* A message without content but with a ``refusal`` (OpenAI's refusal text) gives that text, marked
  ``refused``: the sample is INVALID with the reason "the model refused: ..." (not "empty output").
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import http.client
import io
import json
import math
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import pigbench
from pigbench.judging.answer_probs import option_probs_after_marker, options_from_top_logprobs
from pigbench.judging.backend import Backend, Generation, GenerationParams
from pigbench.judging.messages import Prompt, encode_image
from pigbench.judging.request_cache import RequestCache, request_key
from pigbench.judging.server_pool import ServerPool

DEFAULT_REQUEST_DEADLINE_S = 300.0  # one request, all its attempts and backoffs
TOP_LOGPROBS = 20  # the most OpenAI's API returns per token
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_retries`` retries; delay before retry k (0-based) is
    ``min(max_backoff_s, backoff_s * 2**k)`` times a uniform jitter in [0.5, 1]."""

    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def __post_init__(self) -> None:
        """Raise ValueError for a negative count or delay (every request needs one attempt)."""
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"retry policy: max_retries, backoff_s and max_backoff_s must be >= 0, got {self}")

    def delay(self, attempt: int, retry_after: Optional[float], rng: random.Random) -> float:
        d = min(self.max_backoff_s, self.backoff_s * 2**attempt) * rng.uniform(0.5, 1.0)
        return min(self.max_backoff_s, max(d, retry_after or 0.0))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: the 3xx answer is an :class:`urllib.error.HTTPError`."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _time_left(deadline: float) -> float:
    """Seconds until ``deadline`` (a :func:`time.monotonic` time); :class:`TimeoutError` once it passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """A socket's raw reader that caps each wait at the time left before the deadline (``arm``)."""

    def __init__(self, raw: io.RawIOBase, arm: Callable[[], None]) -> None:
        super().__init__()
        self._raw, self._arm = raw, arm

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> Optional[int]:
        self._arm()
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """``sock`` whose every send and receive (headers and body alike) waits at most until ``deadline``,
    so a peer sending a byte now and then cannot stretch one attempt; anything else goes to ``sock``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def _arm(self) -> None:
        self._sock.settimeout(_time_left(self._deadline))

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._arm()
        self._sock.sendall(data, flags)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock.makefile(mode, buffering=0), self._arm))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _resolve(host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
    """``socket.getaddrinfo`` for a TCP connection to ``host``, done by ``deadline`` (a
    :func:`time.monotonic` time): a lookup cannot be interrupted, so it runs in a daemon thread that
    is left behind when it hangs; :class:`OSError` naming the host when it is not done in time."""
    left = _time_left(deadline)
    found: list[Any] = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except BaseException as exc:
            found.append(exc)

    worker = threading.Thread(target=look_up, name=f"look up {host}", daemon=True)
    worker.start()
    worker.join(left)
    if not found:
        raise OSError(f"looking up {host} took longer than the {round(left, 1):g} s left of the attempt")
    if isinstance(found[0], BaseException):
        raise found[0]
    return found[0]


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    """Looks the host up and connects within the time left before ``deadline``, then holds every
    wait to it."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self._create_connection = self._open_socket

    def _open_socket(self, address: tuple[str, int], timeout: Any = None,
                     source_address: Optional[tuple[str, int]] = None) -> socket.socket:
        """:func:`socket.create_connection` held to the deadline: the lookup, and each address tried
        in turn with the time left (``timeout``, the whole attempt's, is not used)."""
        host, port = address
        error: Optional[OSError] = None
        for family, kind, proto, _, addr in _resolve(host, port, self.deadline):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(_time_left(self.deadline))
                if source_address:
                    sock.bind(source_address)
                sock.connect(addr)
                sock.settimeout(_time_left(self.deadline))  # for the TLS handshake, next unless tunnelling
                return sock
            except OSError as exc:
                sock.close()
                if time.monotonic() >= self.deadline:
                    raise
                error = exc
        raise error or OSError(f"no address found for {host}")

    def _tunnel(self) -> None:
        """An HTTPS proxy's CONNECT exchange with every wait held to the deadline, leaving the
        socket's timeout at the time left for the TLS handshake."""
        raw = self.sock
        self.sock = _DeadlineSocket(raw, self.deadline)  # type: ignore[assignment]
        try:
            super()._tunnel()  # type: ignore[misc]
        finally:
            if self.sock is not None:  # None: the proxy refused, and the connection is closed
                self.sock = raw
        raw.settimeout(_time_left(self.deadline))

    def connect(self) -> None:
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self.deadline)  # type: ignore[assignment]


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, http.client.HTTPSConnection):
    """:class:`_DeadlineHTTPConnection` over TLS (the handshake is capped at the time left when it
    begins, after the connect and any proxy's CONNECT exchange)."""


class _DeadlineRequest(urllib.request.Request):
    """A request whose attempt must be over by ``deadline`` (a :func:`time.monotonic` time)."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: _DeadlineRequest) -> http.client.HTTPResponse:  # type: ignore[override]
        return self.do_open(_DeadlineHTTPConnection, req, deadline=req.deadline)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: _DeadlineRequest) -> http.client.HTTPResponse:  # type: ignore[override]
        return self.do_open(_DeadlineHTTPSConnection, req, deadline=req.deadline)


class RequestFailed(RuntimeError):
    """A request failed for good (non-retryable status, or retries exhausted)."""


class _Retryable(RuntimeError):
    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def split_base_urls(value: Union[str, Sequence[str]]) -> list[str]:
    """Base URLs from a list, a JSON list or a comma-separated string, without trailing slashes."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = [str(u) for u in json.loads(value)]
        except (ValueError, TypeError):
            raise ValueError(f"base URLs: {value!r} is not a JSON list of URLs") from None
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [u.strip().rstrip("/") for u in items if u.strip()]
    if not urls:
        raise ValueError("no base URL given")
    bad = [u for u in urls if urllib.parse.urlsplit(u).scheme not in ("http", "https")]
    if bad:
        raise ValueError(f"base URLs must start with http:// or https://, got {', '.join(map(repr, bad))}")
    return urls


def _public(url: str) -> str:
    """The URL without any user:password part, for messages and provenance."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class OpenAIBackend(Backend):
    """Chat completions against one or more OpenAI-compatible base URLs (see the module docstring)."""

    def __init__(self, base_urls: Union[str, Sequence[str]], model: str, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, retry: RetryPolicy = RetryPolicy(),
                 cache: Optional[RequestCache] = None, request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S) -> None:
        self.base_urls = split_base_urls(base_urls)
        self.pool = ServerPool(self.base_urls)
        self.model = model
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or None
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if not (math.isfinite(request_deadline_s) and request_deadline_s > 0):
            raise ValueError(f"request_deadline_s must be > 0 seconds, got {request_deadline_s!r}")
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.request_deadline_s = request_deadline_s
        self.retry = retry
        self.cache = cache
        self._rng = random.Random()
        handlers = (_NoRedirect, _DeadlineHTTPHandler, _DeadlineHTTPSHandler)
        self._direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), *handlers)
        self._default = urllib.request.build_opener(*handlers)

    # requests ----------------------------------------------------------------------------------
    def request_body(self, prompt: Prompt, params: GenerationParams) -> dict[str, Any]:
        """The JSON body for one prompt. Deterministic: the cache key is its hash."""
        content: list[dict[str, Any]] = []
        last = len(prompt.parts) - 1
        for i, part in enumerate(prompt.parts):
            if part.type == "text":  # a newline unless last, as locally: chat templates join parts as they are
                content.append({"type": "text", "text": str(part.value) + "\n" * (i < last)})
            else:
                mime, data = encode_image(part.value, params.images)  # type: ignore[arg-type]
                url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
                content.append({"type": "image_url", "image_url": {"url": url}})
        messages: list[dict[str, Any]] = [{"role": "system", "content": prompt.system}] if prompt.system else []
        messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "seed": params.seed}
        if params.min_new_tokens:
            body["min_tokens"] = params.min_new_tokens  # vLLM / SGLang extension
        if params.options:
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        return body

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        """One generation per prompt, ``concurrency`` requests at a time. When the wait is interrupted
        (Ctrl-C, SIGTERM as an interrupt), no prompt starts, no request is retried and no backoff is
        waited out: this returns at once, and an attempt in flight ends by its deadline."""
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(prompts))))
        try:
            return list(pool.map(lambda prompt: self._one(prompt, params, stop), prompts))
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(wait=not stop.is_set(), cancel_futures=True)

    def _one(self, prompt: Prompt, params: GenerationParams, stop: threading.Event) -> Generation:
        try:
            body = self.request_body(prompt, params)
        except Exception as exc:  # unreadable image: this prompt fails, the others go on
            return Generation(None, error=f"{type(exc).__name__}: {exc}")
        key = request_key(body)
        if self.cache is not None:
            hit = self.cache.get(key)
            cached = None if hit is None else self._to_generation(hit, params, cached=True)
            if cached is not None and cached.error is None:  # a stored response that does not parse is asked again
                return cached
        try:
            response = self._post_with_retries(json.dumps(body).encode(), stop)
        except RequestFailed as exc:
            return Generation(None, error=str(exc))
        gen = self._to_generation(response, params)
        if gen.error is None and self.cache is not None:
            self.cache.put(key, response)
        return gen

    def _post_with_retries(self, data: bytes, stop: threading.Event) -> dict[str, Any]:
        """The response to ``data``, retried as the module docstring says, all by ``request_deadline_s``;
        :class:`RequestFailed` when it fails for good, out of time, or once ``stop`` is set (before
        another attempt, or during a backoff)."""
        attempts = self.retry.max_retries + 1
        start = time.monotonic()
        end = start + self.request_deadline_s

        def give_up(made: int, failure: _Retryable, out_of_time: bool) -> RequestFailed:
            # The attempt count first: failures are counted by their start (results.error_reason),
            # which would cut it from a long server message.
            took = (f" in {time.monotonic() - start:.1f} s (request deadline {self.request_deadline_s:g} s)"
                    if out_of_time else "")
            return RequestFailed(f"gave up after {made} attempt{'s' if made > 1 else ''}{took}: {failure}")

        for attempt in range(attempts):
            if stop.is_set():
                raise RequestFailed("interrupted")
            base = self.pool.acquire()
            failure: Optional[_Retryable] = None
            try:
                return self._post(f"{base}/chat/completions", data, min(time.monotonic() + self.timeout_s, end))
            except _Retryable as exc:
                failure = exc
            finally:
                self.pool.release(base, ok=failure is None, retry_after=None if failure is None else failure.retry_after)
            if attempt + 1 == attempts:
                raise give_up(attempts, failure, out_of_time=time.monotonic() >= end) from None
            wait = 0.0 if self.pool.any_up() else self.retry.delay(attempt, failure.retry_after, self._rng)
            if time.monotonic() + wait >= end:  # no attempt could follow the wait (another server's included)
                raise give_up(attempt + 1, failure, out_of_time=True) from None
            if wait and stop.wait(wait):  # no wait when another server takes the retry at once
                raise RequestFailed("interrupted")
        raise AssertionError("unreachable")

    def _post(self, url: str, data: bytes, deadline: float) -> dict[str, Any]:
        """One attempt, done by ``deadline`` (a :func:`time.monotonic` time); :class:`_Retryable` or
        :class:`RequestFailed` when it fails."""
        headers = {"Content-Type": "application/json", "User-Agent": f"pigbench/{pigbench.__version__}"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        where = _public(url)
        opener = self._direct if urllib.parse.urlsplit(url).hostname in _LOOPBACK else self._default
        budget = max(0.0, deadline - time.monotonic())
        try:
            with opener.open(_DeadlineRequest(url, data=data, headers=headers, method="POST", deadline=deadline),
                             timeout=self.timeout_s) as resp:
                raw = _read_by(resp, deadline)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc, deadline)
            if 300 <= exc.code < 400:
                detail = f"redirected to {_public(str(exc.headers.get('Location')))}, not followed (pass that URL instead)"
            message = f"HTTP {exc.code} from {where}: {detail}"
            if exc.code in (408, 429) or exc.code >= 500:
                raise _Retryable(message, _retry_after(exc.headers)) from None
            raise RequestFailed(message) from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"no answer from {where} within {round(budget, 2):g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"no answer from {where} within {round(budget, 2):g} s") from None
            raise _Retryable(f"cannot reach {where}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # a reset, a TLS error, a host gone mid-answer
            raise _Retryable(f"connection to {where} failed: {type(exc).__name__}: {exc}") from None
        try:
            response = json.loads(raw)
        except ValueError:
            raise _Retryable(f"invalid JSON from {where}: {raw[:200]!r}") from None
        if _message_of(response) is None:  # a gateway's error object sent with 200, say
            raise _Retryable(f"malformed response from {where} (no choices[0].message): {raw[:200]!r}")
        return response

    # responses ---------------------------------------------------------------------------------
    def _to_generation(self, response: Mapping[str, Any], params: GenerationParams, cached: bool = False) -> Generation:
        message = _message_of(response)
        if message is None:  # a cached entry: an answer from the server was checked in _post
            return Generation(None, error=f"malformed response (no choices[0].message): {json.dumps(response)[:200]}")
        choice, content = response["choices"][0], message.get("content")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = content if isinstance(content, str) else ""
        refusal = message.get("refusal")  # OpenAI's refusal text, sent with a null content
        refused = not text and isinstance(refusal, str) and bool(refusal.strip())
        if refused:
            text = refusal
        probs = None
        if params.options:
            steps = ((choice.get("logprobs") or {}).get("content")) or []
            tokens = [s.get("token", "") for s in steps]
            per_step = [options_from_top_logprobs(s.get("top_logprobs") or [], params.options, params.answer_marker)
                        for s in steps]
            probs = option_probs_after_marker(tokens, per_step, params.answer_marker, params.options)
        model, fingerprint = response.get("model"), response.get("system_fingerprint")
        served = {"model": model} if isinstance(model, str) and model and model != self.model else {}
        if isinstance(fingerprint, str) and fingerprint:
            served["system_fingerprint"] = fingerprint
        return Generation(text, probs, cached=cached, truncated=choice.get("finish_reason") == "length", served=served,
                          refused=refused)

    def provenance(self) -> dict[str, Any]:
        return {"api": "openai-chat-completions", "model": self.model,
                "base_urls": [_public(u) for u in self.base_urls], "api_key_env": self.api_key_env}

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None


def _message_of(response: Any) -> Optional[dict[str, Any]]:
    """``response["choices"][0]["message"]`` when it is a JSON object, else None."""
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    return message if isinstance(message, dict) else None


def _read_by(resp: Any, deadline: float) -> bytes:
    """The whole body of ``resp`` (an :class:`http.client.HTTPResponse` on a :class:`_DeadlineSocket`,
    which caps each wait at the time left), read in chunks; raises :class:`TimeoutError` once
    ``deadline`` (a :func:`time.monotonic` time) passes, however slowly the bytes trickle in, and
    :class:`http.client.IncompleteRead` when the connection ends before ``Content-Length`` bytes came."""
    chunks: list[bytes] = []
    while True:
        _time_left(deadline)
        chunk = resp.read1(65536)
        if not chunk:
            break
        chunks.append(chunk)
    if getattr(resp, "length", None):
        raise http.client.IncompleteRead(b"".join(chunks), resp.length)
    return b"".join(chunks)


def _error_detail(exc: urllib.error.HTTPError, deadline: float) -> str:
    """The start of an error response's body in one line, its whitespace runs (an HTML error page's
    line breaks) made single spaces ("" when it is not complete by ``deadline``)."""
    try:
        body = _read_by(exc.fp, deadline)[:300].decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""
    return " ".join(body.split())


def _retry_after(headers: Any) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110);
    ``None`` when absent or unreadable, 0 for a date already past."""
    try:
        value = headers.get("Retry-After")
    except AttributeError:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year no datetime holds
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())
