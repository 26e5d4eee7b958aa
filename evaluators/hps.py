"""HPS v2 and v2.1 (Wu et al. 2023): cosine between open_clip ViT-H-14 image and text embeddings.

The model is open_clip ViT-H-14 built with ``pretrained=None`` and fully overwritten by the HPS
checkpoint (``xswu/HPSv2``: ``HPS_v2_compressed.pt`` or ``HPS_v2.1_compressed.pt``; a local file,
folder or safetensors re-export also works), loaded strictly. Preprocessing follows hpsv2's
validation transform: to float in [0, 1], resize the *longest* side to 224 with torchvision
bicubic (antialias as current torchvision does), pad to a centered 224x224 square with 0, OpenAI
mean/std. The score is the raw cosine (hpsv2's printout multiplies by 100). The ``hpsv2`` package
is not used: it downloads a 3.9 GB base model it then overwrites and lacks its tokenizer file.

Example::

    pigbench run --evaluator hps-v2.1 --dataset pickapic --model-path ./HPS_v2.1_compressed.pt
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from pigbench.evaluator import ScoreRequest
from pigbench.evaluators._scorer import EmbeddingConfig, EmbeddingScorer, exp_logit_scale
from pigbench.evaluators._weights import WeightFile, check_file


@dataclass(frozen=True)
class HPSConfig(EmbeddingConfig):
    """``architecture``: the open_clip model name the checkpoint fits; ``antialias``: of the bicubic resize."""

    architecture: str = "ViT-H-14"
    antialias: bool = True


class _HPS(EmbeddingScorer):
    kind = "scalar"
    Config = HPSConfig
    packages = ("torch", "open_clip")
    default_model = "xswu/HPSv2"
    checkpoint: ClassVar[str] = ""
    version_label: ClassVar[str] = ""

    @classmethod
    def weight_file(cls) -> WeightFile:
        return WeightFile(
            cls.name or f"hps-{cls.version_label}", f"the HPS {cls.version_label} checkpoint", cls.checkpoint,
            cls.env_var, "https://huggingface.co/xswu/HPSv2",
        )

    @classmethod
    def check_weights(cls, config: HPSConfig) -> None:
        import open_clip

        if config.architecture not in open_clip.list_models():  # else open_clip fails in setup(), after the dataset
            raise ValueError(f"{cls.name or 'hps'}: option architecture={config.architecture!r} is not an open_clip model "
                             "name (open_clip.list_models() lists them; the HPS checkpoints fit ViT-H-14)")
        check_file(cls.model_source(config), cls.weight_file())

    def load(self) -> None:
        import open_clip

        from pigbench.embedding import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageTransform
        from pigbench.evaluators._weights import fetch_file, load_strict, read_state_dict, source_fingerprint

        path = fetch_file(self.model_source(self.config), self.weight_file())
        arch = self.config.architecture
        state = read_state_dict(path, "the HPS checkpoint")  # before building ViT-H-14 (a minute on a CPU)
        model = open_clip.create_model(arch, pretrained=None, device=self.device)
        load_strict(model, state, f"the HPS checkpoint (open_clip {arch})", str(path))
        model.eval().to(dtype=self.dtype)
        tokenizer = open_clip.get_tokenizer(arch)
        size = model.visual.image_size
        transform = ImageTransform(
            size=size[0] if isinstance(size, (tuple, list)) else size, mode="longest-pad", resampling="tensor",
            antialias=self.config.antialias, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
        )
        sha = source_fingerprint(str(path))
        self.images = self.image_embedder(lambda x: model.encode_image(x, normalize=True), transform, f"hps:{arch}:{sha}")
        self.texts = self.text_embedder(lambda t: model.encode_text(tokenizer(t).to(self.device), normalize=True))
        self._provenance = {"checkpoint": str(path), "checkpoint_sha256": sha, "architecture": arch}
        self.calibration_scale = exp_logit_scale(model)  # scores are raw cosines

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        from pigbench.embedding import l2_normalize

        img = l2_normalize(self.images.stack([r.image for r in requests]))
        txt = l2_normalize(self.texts.stack([r.prompt for r in requests]))
        return (img * txt).sum(-1).tolist()


class HPSv2(_HPS):
    description = "HPS v2.0: cosine of open_clip ViT-H-14 image/text embeddings with the HPS_v2 checkpoint"
    env_var = "PIGBENCH_HPSV2_PATH"
    checkpoint = "HPS_v2_compressed.pt"
    version_label = "v2.0"


class HPSv21(_HPS):
    description = "HPS v2.1: cosine of open_clip ViT-H-14 image/text embeddings with the HPS_v2.1 checkpoint"
    env_var = "PIGBENCH_HPSV21_PATH"
    checkpoint = "HPS_v2.1_compressed.pt"
    version_label = "v2.1"
