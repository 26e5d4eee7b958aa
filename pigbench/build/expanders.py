"""Chat models that expand prompts: any OpenAI-compatible server, or a local transformers causal LM.

``--api-base URL --model NAME`` (or ``PIGBENCH_EXPAND_API_BASE`` / ``PIGBENCH_EXPAND_MODEL``)
selects a served model; the API key is read only from the environment variable named by
``--api-key-env`` (default ``OPENAI_API_KEY``), never from a flag or file. ``--local-model PATH``
selects a local transformers causal LM instead (a directory or a hub id in the local cache).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from typing import Any, Optional

from pigbench.evaluator import RequirementError
from pigbench.hub import cache_only

API_BASE_ENV = "PIGBENCH_EXPAND_API_BASE"
MODEL_ENV = "PIGBENCH_EXPAND_MODEL"


class ExpanderError(RuntimeError):
    """The model server cannot be used (wrong URL, key or model); stops the stage."""


class RequestFailed(RuntimeError):
    """One request failed in a way that may pass (timeout, 5xx, refused connection); counts as an attempt."""


class OpenAIChatExpander:
    """POST ``{api_base}/chat/completions``; raises :class:`RequestFailed` or :class:`ExpanderError`."""

    def __init__(self, api_base: str, model: str, api_key: Optional[str] = None, temperature: float = 0.8,
                 seed: Optional[int] = 0, timeout: float = 120.0, json_mode: bool = False) -> None:
        self.api_base = api_base.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.seed = seed
        self.timeout = timeout
        self.json_mode = json_mode

    def complete(self, messages: list[dict[str, str]]) -> str:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature}
        if self.seed is not None:
            body["seed"] = self.seed
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.api_base}/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            if exc.code in (401, 403, 404):
                raise ExpanderError(f"{self.api_base}/chat/completions answered HTTP {exc.code} for model "
                                    f"{self.model!r}: {detail} (check --api-base, --model and the API key)") from exc
            raise RequestFailed(f"HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise RequestFailed(str(exc)) from exc
        try:
            return str(payload["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as exc:
            raise RequestFailed(f"unexpected response shape: {json.dumps(payload)[:300]}") from exc

    def provenance(self) -> dict[str, Any]:
        return {"backend": "openai-compatible", "api_base": self.api_base, "model": self.model,
                "temperature": self.temperature, "seed": self.seed}


class TransformersExpander:
    """A local causal LM; the chat template is used when the tokenizer has one."""

    def __init__(self, path: str, device: str = "cpu", max_new_tokens: int = 512, temperature: float = 0.8,
                 seed: int = 0) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise RequirementError("--local-model needs torch and transformers: pip install -e '.[models]'") from exc
        try:
            local = cache_only(path)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
            self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=local).to(device).eval()
        except OSError as exc:
            raise RequirementError(f"cannot load the causal LM {path!r} ({exc}); pass a local directory with "
                                   "--local-model or download the model into the Hugging Face cache") from exc
        self.torch = torch
        self.path, self.device = path, device
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed

    def complete(self, messages: list[dict[str, str]]) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"
        inputs = tok(text, return_tensors="pt").to(self.device)
        self.torch.manual_seed(self.seed)
        with self.torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      do_sample=self.temperature > 0, temperature=self.temperature or None,
                                      pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def provenance(self) -> dict[str, Any]:
        return {"backend": "transformers", "model": self.path, "temperature": self.temperature,
                "seed": self.seed, "max_new_tokens": self.max_new_tokens}


def add_expander_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-base", help=f"OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (env {API_BASE_ENV})")
    p.add_argument("--model", help=f"model name on that server (env {MODEL_ENV})")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--json-mode", action="store_true", help='send response_format={"type": "json_object"}')
    p.add_argument("--local-model", help="local transformers causal LM (directory or cached hub id), not a server")
    p.add_argument("--device", default="cpu", help="device of --local-model")
    p.add_argument("--max-new-tokens", type=int, default=512, help="generation length of --local-model")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0, help="sampling seed sent to the model")


def expander_from_args(args: argparse.Namespace):
    """The expander the flags (or environment) select; a clear error when none is configured."""
    if args.local_model:
        return TransformersExpander(args.local_model, device=args.device, max_new_tokens=args.max_new_tokens,
                                    temperature=args.temperature, seed=args.seed)
    api_base = args.api_base or os.environ.get(API_BASE_ENV)
    model = args.model or os.environ.get(MODEL_ENV)
    if not api_base or not model:
        raise RequirementError(f"no expander: pass --api-base URL and --model NAME (or set {API_BASE_ENV} and "
                               f"{MODEL_ENV}) for an OpenAI-compatible server, or --local-model PATH")
    return OpenAIChatExpander(api_base, model, api_key=os.environ.get(args.api_key_env),
                              temperature=args.temperature, seed=args.seed, json_mode=args.json_mode)
