"""Base classes of the evaluators that score from cached image (and text) features.

A plug-in subclasses :class:`EmbeddingScorer`, sets its metadata and ``weights`` lookup, and
implements ``load()`` (build ``self.images`` and, if it reads prompts, ``self.texts``) and
``score()``. The base handles the model source (``--model-path``, then the environment variable,
then the published default), device and dtype, bulk prefetching of every image and prompt of a
batch of episodes (so decode and encode run in large batches, each distinct image once), and
provenance. :class:`ReferenceSimilarity` adds the mean similarity to a user's references.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

from pigbench.evaluator import (EvaluatorConfig, Need, ScalarConfig, ScalarEvaluator, ScoreRequest, require_packages,
                                resolve_local_or_hub)
from pigbench.hub import model_folder_hint
from pigbench.protocol import Episode, ImageRef, Prediction

if TYPE_CHECKING:
    from pigbench.embedding import ImageEmbedder, ImageTransform, TextEmbedder


def configured(value: str, env_var: str, default: str) -> str:
    """Where a model file comes from: the config value, else ``$env_var``, else ``default``."""
    return value or os.environ.get(env_var, "") or default


def exp_logit_scale(model: Any) -> float:
    """exp(logit_scale) of a CLIP model (transformers or open_clip): the factor that makes its
    cosines the logits it was trained with."""
    return float(model.logit_scale.detach().float().exp())


@dataclass(frozen=True)
class EmbeddingConfig(ScalarConfig):
    """``model_path``: hub id, local folder or file; empty means the evaluator's environment
    variable, then its published default. ``dtype``: auto (float16 on CUDA, float32 on CPU),
    float32, float16 or bfloat16."""

    model_path: str = ""
    dtype: str = "auto"


@dataclass(frozen=True)
class SimilarityConfig(EmbeddingConfig):
    """``subtract_rejected``: score minus the mean similarity to the rejected reference images."""

    subtract_rejected: bool = False


class EmbeddingScorer(ScalarEvaluator):
    """A scalar evaluator whose scores come from per-image features computed once per image."""

    needs: ClassVar[tuple[Need, ...]] = ("gpu", "weights")
    Config: ClassVar[type[EvaluatorConfig]] = EmbeddingConfig
    packages: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    env_var: ClassVar[str] = ""
    default_model: ClassVar[str] = ""
    prepare_window: ClassVar[int] = 2048  # the runner announces this many episodes: their images stream in one pass

    images: "ImageEmbedder"
    texts: Optional["TextEmbedder"] = None

    @classmethod
    def model_source(cls, config: EvaluatorConfig) -> str:
        """``config.model_path``, else ``$env_var``, else ``default_model``."""
        return configured(getattr(config, "model_path", ""), cls.env_var, cls.default_model)

    def model_sources(self) -> list[str]:
        return [*super().model_sources(), self.model_source(self.config)]

    @classmethod
    def check_requirements(cls, config: EvaluatorConfig) -> None:
        require_packages(cls.name or cls.__name__, *cls.packages)
        from pigbench.embedding import resolve_dtype

        try:  # an unknown dtype fails here, not in setup() after the dataset has been read
            resolve_dtype(getattr(config, "dtype", "auto"), "cpu")
        except ValueError as exc:
            raise ValueError(f"{cls.name or cls.__name__}: option {exc}") from None
        cls.check_weights(config)

    @classmethod
    def check_weights(cls, config: EvaluatorConfig) -> None:
        """Raise RequirementError if a weight is unavailable (no download). Plug-ins override."""

    @classmethod
    def folder_hint(cls) -> str:
        """What to do about an incomplete local model folder: download ``default_model`` whole and
        point ``--model-path`` or :attr:`env_var` to it."""
        return model_folder_hint(cls.default_model, "--model-path", cls.env_var)

    @classmethod
    def check_model(cls, config: EvaluatorConfig, what: str) -> None:
        """RequirementError unless :meth:`model_source` is a local copy or a hub id that can be had
        now; the message names ``what``, ``--model-path``, :attr:`env_var` and ``default_model``'s
        download command."""
        resolve_local_or_hub(cls.model_source(config), cls.name or cls.__name__, cls.env_var, what, default=cls.default_model)

    def setup(self) -> None:
        if getattr(self, "_loaded", False):
            return
        import torch

        from pigbench.embedding import resolve_dtype

        self.device = torch.device(self.runtime.device)
        self.dtype = resolve_dtype(getattr(self.config, "dtype", "auto"), self.device)
        self._provenance: dict[str, Any] = {}
        self.load()
        self._loaded = True

    @abstractmethod
    def load(self) -> None:
        """Load the weights; set ``self.images`` (and ``self.texts``); record ``self._provenance``."""

    def image_embedder(self, encode, transform: "ImageTransform", model_key: str, compile_encoder: bool = False) -> "ImageEmbedder":
        """An embedder on this evaluator's device, dtype and batch size. Decode workers:
        ``runtime.num_workers``, or when that is 0 on CUDA, all CPU cores but two (at most 14).
        With ``compile_encoder``, ``encode`` is compiled for the batch size when the user asks for it
        with PIGBENCH_COMPILE=1 (:mod:`pigbench.compiled_encoder`)."""
        from pigbench.embedding import ImageEmbedder

        workers = self.runtime.num_workers
        if workers == 0 and self.device.type == "cuda":
            workers = max(0, min(14, (os.cpu_count() or 1) - 2))
        if compile_encoder:
            from pigbench.compiled_encoder import CompiledEncoder, compile_requested

            if compile_requested():
                encode = CompiledEncoder(encode, self.runtime.batch_size)
        return ImageEmbedder(
            encode, transform, model_key=model_key, device=self.device, dtype=self.dtype,
            batch_size=self.runtime.batch_size, num_workers=workers,
            cache_dir=getattr(self.runtime, "cache_dir", None),
        )

    def text_embedder(self, encode) -> "TextEmbedder":
        from pigbench.embedding import TextEmbedder

        return TextEmbedder(encode, batch_size=self.runtime.batch_size)

    def prompts_of(self, episode: Episode) -> list[str]:
        """The strings ``self.texts`` must encode for this episode."""
        return [episode.target.prompt]

    def images_of(self, episode: Episode) -> list[ImageRef]:
        """The images ``self.images`` must embed for this episode: the pair, and with
        ``uses_references`` the reference images."""
        refs = [episode.target.image_a, episode.target.image_b]
        if self.uses_references:
            refs += [img for r in episode.references for img in (r.preferred, r.rejected)]
        return refs

    def prepare(self, episodes: Sequence[Episode]) -> None:
        """Embed every image and prompt of ``episodes`` (one decode/encode stream across what would be
        many ``predict`` calls, each of which pays a start and an end with the device idle)."""
        self.setup()
        self.images.embed([img for ep in episodes for img in self.images_of(ep)])
        if self.texts is not None:
            self.texts.embed([p for ep in episodes for p in self.prompts_of(ep)])

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        self.prepare(episodes)  # embeds only what prepare() has not
        return super().predict(episodes)

    def provenance(self) -> dict[str, Any]:
        out = dict(getattr(self, "_provenance", {}))
        if getattr(self, "_loaded", False):
            out["dtype"] = str(self.dtype).removeprefix("torch.")
            out["device"] = str(self.device)
            out["image_embedding"] = self.images.stats()
            from pigbench.compiled_encoder import CompiledEncoder

            encoder = self.images.encode
            if isinstance(encoder, CompiledEncoder):
                out["image_encoder"] = f"eager (compiling failed: {encoder.failure})" if encoder.failure else "compiled"
        return out


class ReferenceSimilarity(EmbeddingScorer):
    """s(x) = mean cosine of x to the preferred reference images (minus the mean to the rejected
    ones with ``subtract_rejected``). An episode without references gives an INVALID prediction."""

    kind = "similarity"
    uses_references = True
    uses_prompt = False
    Config = SimilarityConfig

    def images_of(self, episode: Episode) -> list[ImageRef]:
        """The pair and the preferred reference images; the rejected ones with ``subtract_rejected``."""
        refs = [episode.target.image_a, episode.target.image_b] + [r.preferred for r in episode.references]
        if self.config.subtract_rejected:
            refs += [r.rejected for r in episode.references]
        return refs

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        from pigbench.embedding import l2_normalize

        out = []
        for req in requests:
            if not req.references:
                raise ValueError("the episode has no reference pairs to compare with")
            x = l2_normalize(self.images.get(req.image))
            sim = (l2_normalize(self.images.stack([r.preferred for r in req.references])) @ x).mean()
            if self.config.subtract_rejected:
                sim = sim - (l2_normalize(self.images.stack([r.rejected for r in req.references])) @ x).mean()
            out.append(float(sim))
        return out
