"""ImageReward (Xu et al. 2023): BLIP ViT-L + BERT cross-attention + MLP, standardized.

Weights ``THUDM/ImageReward`` (``ImageReward.pt`` and ``med_config.json``; a local folder holding
both also works), loaded strictly into a network built from transformers' BLIP blocks; tokenizer
``bert-base-uncased`` plus BLIP's two added tokens. Recipe (THUDM/ImageReward ``ImageReward.py``):
bicubic short-side resize to 224, torchvision center crop, OpenAI mean/std; prompt padded to
``max_length`` 35 with truncation; r = (MLP([CLS]) - 0.16717362830052426) / 1.0333394966054072.
The ``image-reward`` package is not used (its pins break open-clip-torch and transformers 5).

Example::

    pigbench run --evaluator imagereward --dataset pickapic --model-path /models/ImageReward \\
        --option tokenizer_path=/models/bert-base-uncased
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from pigbench.evaluator import ScoreRequest, resolve_local_or_hub
from pigbench.evaluators._scorer import EmbeddingConfig, EmbeddingScorer, configured
from pigbench.evaluators._weights import WeightFile, check_file
from pigbench.hub import model_folder_hint

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
TOKENIZER_ENV = "PIGBENCH_BERT_PATH"
# ImageReward v1.0's med_config.json (BLIP's bert-base text encoder) has 512 position embeddings; the
# file is only read at load time, where its own max_position_embeddings is checked again.
MAX_POSITIONS = 512


@dataclass(frozen=True)
class ImageRewardConfig(EmbeddingConfig):
    """``tokenizer_path``: BERT tokenizer (empty: $PIGBENCH_BERT_PATH, then bert-base-uncased);
    ``max_length``: prompt tokens kept, [CLS] and [SEP] included, so at least 2 and at most the
    text encoder's position embeddings (512)."""

    tokenizer_path: str = ""
    max_length: int = 35

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length < 2:  # the tokenizer ignores 0 and 1 (no truncation) and fails on < 0
            raise ValueError(f"imagereward: option max_length must be >= 2 ([CLS] and [SEP] count), got {self.max_length!r}")
        if self.max_length > MAX_POSITIONS:
            raise ValueError(f"imagereward: option max_length must be <= {MAX_POSITIONS} (the text encoder's "
                             f"position embeddings), got {self.max_length!r}")


class ImageReward(EmbeddingScorer):
    kind = "scalar"
    description = "ImageReward v1.0: BLIP ViT-L + BERT cross-attention + MLP, standardized reward"
    Config = ImageRewardConfig
    env_var = "PIGBENCH_IMAGEREWARD_PATH"
    default_model = "THUDM/ImageReward"

    @classmethod
    def weight_file(cls, filename: str) -> WeightFile:
        what = "the ImageReward checkpoint" if filename.endswith(".pt") else "the ImageReward model config"
        return WeightFile(cls.name or "imagereward", what, filename, cls.env_var,
                          "https://huggingface.co/THUDM/ImageReward")

    @classmethod
    def tokenizer_source(cls, config: ImageRewardConfig) -> str:
        return configured(config.tokenizer_path, TOKENIZER_ENV, "bert-base-uncased")

    def model_sources(self) -> list[str]:
        return [*super().model_sources(), self.tokenizer_source(self.config)]

    @classmethod
    def check_weights(cls, config: ImageRewardConfig) -> None:
        source = cls.model_source(config)
        check_file(source, cls.weight_file("ImageReward.pt"))
        check_file(source, cls.weight_file("med_config.json"))
        resolve_local_or_hub(cls.tokenizer_source(config), cls.name or "imagereward", TOKENIZER_ENV,
                             "the bert-base-uncased tokenizer", flag="--option tokenizer_path=", default="bert-base-uncased")

    def load(self) -> None:
        from pigbench.checkpoint import load_tokenizer
        from pigbench.embedding import ImageTransform
        from pigbench.evaluators._imagereward_net import build_from_checkpoint, translate_keys
        from pigbench.evaluators._weights import CheckpointError, fetch_file, load_strict, read_state_dict, source_fingerprint

        source = self.model_source(self.config)
        ckpt = fetch_file(source, self.weight_file("ImageReward.pt"))
        med_path = fetch_file(source, self.weight_file("med_config.json"))
        try:
            med_config = json.loads(med_path.read_text())
        except ValueError as exc:
            raise CheckpointError(f"the ImageReward model config {med_path} is not valid JSON: {exc}") from None
        positions = med_config.get("max_position_embeddings") if isinstance(med_config, dict) else None
        if isinstance(positions, int) and self.config.max_length > positions:
            raise ValueError(f"imagereward: option max_length must be <= {positions} (max_position_embeddings "
                             f"in {med_path}), got {self.config.max_length!r}")
        state = read_state_dict(ckpt, "the ImageReward checkpoint")
        try:
            self.net = build_from_checkpoint(state, med_config)
        except KeyError as exc:  # a key the network's shape is read from
            key = exc.args[0]
            where = f"checkpoint {ckpt}" if str(key).startswith("blip.") else f"model config {med_path}"
            raise CheckpointError(f"the ImageReward {where} has no {key!r}: not ImageReward v1.0's") from None
        load_strict(self.net, translate_keys(state), "the ImageReward checkpoint", str(ckpt))
        self.net.eval().to(device=self.device, dtype=self.dtype)
        self.net.mlp.float()
        tokenizer = self.tokenizer_source(self.config)
        self.tokenizer = load_tokenizer(tokenizer, "the bert-base-uncased tokenizer",
                                        model_folder_hint("bert-base-uncased", "--option tokenizer_path=", TOKENIZER_ENV))
        self.tokenizer.add_tokens(["[DEC]", "[ENC]"], special_tokens=True)  # as BLIP's init_tokenizer
        sha = source_fingerprint(str(ckpt))
        transform = ImageTransform(size=self.net.image_size, crop_offset="round")
        self.images = self.image_embedder(self.net.image_tokens, transform, f"imagereward:{sha}")
        self._provenance = {"checkpoint": str(ckpt), "checkpoint_sha256": sha, "tokenizer": self.tokenizer_source(self.config)}

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        import torch

        tokens = self.tokenizer(
            [r.prompt for r in requests], padding="max_length", truncation=True,
            max_length=self.config.max_length, return_tensors="pt",
        ).to(self.device)
        image_tokens = self.images.stack([r.image for r in requests]).to(self.device)
        with torch.inference_mode():
            raw = self.net.raw_reward(tokens["input_ids"], tokens["attention_mask"], image_tokens)
        return ((raw - REWARD_MEAN) / REWARD_STD).cpu().tolist()
