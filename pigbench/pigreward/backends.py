"""Backends for PIGReward's two parts: one per distinct (model, adapter), so that the default, one
Qwen2-VL for both parts, is loaded once. ``local`` is :class:`~pigbench.fastgen.backend.FastLocalBackend`;
``openai`` is the judges' OpenAI-compatible client (e.g. a vLLM server serving both parts), with
responses cached under ``<cache>/requests/`` so a resumed run re-sends nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pigbench.hub import model_folder_hint
from pigbench.pigreward.config import DEFAULT_MODEL, PIGRewardConfig


def build_backends(config: PIGRewardConfig, device: str, cache_root: Path, requests_hash: str) -> dict[tuple[str, str], Any]:
    """Backends keyed by (model, adapter) for the parts ``config`` uses; ``requests_hash`` names the
    served parts' request cache files (with each part's model)."""
    out: dict[tuple[str, str], Any] = {}
    for model, adapter, option in config.parts():
        if (model, adapter) in out:
            continue
        if config.backend == "openai":
            from pigbench.judging.openai_backend import OpenAIBackend, RetryPolicy
            from pigbench.judging.request_cache import RequestCache

            tag = hashlib.sha256(f"{requests_hash}\0{model}".encode()).hexdigest()[:16]
            out[(model, adapter)] = OpenAIBackend(
                config.base_url or os.environ["OPENAI_BASE_URL"], model, api_key_env=config.api_key_env,
                concurrency=config.concurrency, timeout_s=config.timeout_s,
                retry=RetryPolicy(max_retries=config.max_retries), request_deadline_s=config.request_deadline_s,
                cache=RequestCache(cache_root / "requests" / f"pigreward-{tag}.sqlite"))
        else:
            from pigbench.fastgen.backend import FastLocalBackend
            from pigbench.lvlm_loader import load_lvlm

            flag = config.flag(option)
            net, processor = load_lvlm(model, "PIGReward", device=device, dtype=config.dtype, adapter=adapter,
                                       hint=model_folder_hint(DEFAULT_MODEL, flag), model_flag=flag)
            out[(model, adapter)] = FastLocalBackend(net, processor, batch_size=config.decode_batch, source=model)
    return out
