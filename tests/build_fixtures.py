"""Shared helpers of the tests/test_build_*.py files: a fake chat server, a colour pipeline, workspaces.

* :class:`FakeChatServer` is a :class:`~pigbench.judging.fake_server.FakeServer` whose replies a
  test scripts per base prompt and attempt; it records every request.
* :class:`ColorPipeline` stands in for an SDXL pipeline in :func:`pigbench.build.render.render_jobs`:
  each image is a flat colour derived from the prompt and the generator's seed, so the rest of the
  render stage (batching, files, records) runs for real without weights.
* :func:`tiny_sdxl_dir` saves one tiny random-weight SDXL pipeline per test session.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import http.cookiejar
import json
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

from PIL import Image

from pigbench.build.prompts import main as prompts_main
from pigbench.build.render import RenderSettings, pending_jobs, render_jobs
from pigbench.build.sets import record_decision, rendered_sets
from pigbench.build.workspace import Workspace, append_jsonl, read_jsonl
from pigbench.judging.fake_server import FakeServer, Reply

BASE_PROMPT = re.compile(r"Base prompt: (.*)")


def good_reply(base: str, tag: str = "") -> str:
    styles = ["a photograph", "an oil painting", "a watercolor", "a 3D render"]
    return json.dumps({"variants": [f"{base}, {s}{tag}, scene {i}" for i, s in enumerate(styles)]})


class FakeChatServer(FakeServer):
    """``reply(base_prompt, attempt) -> (status, content)`` decides each answer; ``requests`` records bodies."""

    def __init__(self, reply: Callable[[str, int], tuple[int, str]]) -> None:
        self.attempts: Counter = Counter()
        lock = threading.Lock()

        def answer(body: dict) -> Reply:
            base = BASE_PROMPT.search(body["messages"][0]["content"]).group(1)
            with lock:
                self.attempts[base] += 1
                attempt = self.attempts[base]
            status, content = reply(base, attempt)
            return Reply(content, status=status)

        super().__init__(answer)


class ColorPipeline:
    """Callable like ``StableDiffusionXLPipeline``; returns flat-colour images of the asked size."""

    scheduler = SimpleNamespace()
    device = "cpu"

    def __call__(self, prompt, generator, width, height, **kwargs):
        images = []
        for text, gen in zip(prompt, generator):
            digest = hashlib.sha256(f"{text}|{gen.initial_seed()}".encode()).digest()
            images.append(Image.new("RGB", (width, height), tuple(digest[:3])))
        return SimpleNamespace(images=images)


def select(root: Path, count: int, seed: int = 0) -> Workspace:
    prompts_main(SimpleNamespace(workdir=str(root), count=count, seed=seed, partiprompts=None,
                                 challenge="Simple Detail", force=False))
    return Workspace.at(root)


def workspace_with_sets(root: Path, count: int, keep: Optional[int] = None, size: int = 64) -> Workspace:
    """``count`` selected prompts, expanded (scripted variants), rendered by :class:`ColorPipeline`, ``keep`` kept."""
    ws = select(root, count)
    for p in read_jsonl(ws.prompts):
        variants = json.loads(good_reply(p["base_prompt"]))["variants"]
        append_jsonl(ws.variants, {"set_id": p["set_id"], "base_prompt": p["base_prompt"], "variants": variants,
                                   "attempts": 1, "expander": {"backend": "scripted"}, "max_chars": 300})
    settings = RenderSettings(model="test/color-pipeline", steps=1, width=size, height=size, dtype="float32")
    list(render_jobs(ColorPipeline(), pending_jobs(ws, settings), settings, ws, batch_size=4))
    for i, s in enumerate(rendered_sets(ws)):
        if keep is None or i < keep:
            record_decision(ws, s.set_id, "keep", "")
        else:
            record_decision(ws, s.set_id, "drop", "variants too similar to split preferences")
    return ws


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models run about ten times faster on one thread than on two contended ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=1)
def tiny_sdxl_dir() -> Path:
    """A tiny random-weight SDXL pipeline saved with ``save_pretrained`` (once per test session)."""
    from pigbench.build.random_sdxl import build_random_sdxl

    root = Path(tempfile.mkdtemp(prefix="tiny-sdxl-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    build_random_sdxl("tiny", root / "tokenizer").save_pretrained(root / "pipeline")
    return root / "pipeline"


def wsgi_call(app, method: str, path: str, body: Optional[bytes] = None, content_type: str = "application/json",
              cookie: str = "") -> tuple[int, dict, bytes]:
    """Call a WSGI app in-process: (status code, headers, body)."""
    import io
    from wsgiref.util import setup_testing_defaults

    path, _, query = path.partition("?")
    body = body or b""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "HTTP_COOKIE": cookie,
               "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    out = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], out


class Browserless:
    """An HTTP client with its own cookie jar (one annotator's browser)."""

    def __init__(self, base):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, method, path, form=None, data=None):
        body, headers = None, {}
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
        elif data is not None:
            body, headers = json.dumps(data).encode(), {"Content-Type": "application/json"}
        try:
            with self.opener.open(urllib.request.Request(self.base + path, body, headers, method=method)) as r:
                return r.status, r.read(), r.geturl()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.geturl()
