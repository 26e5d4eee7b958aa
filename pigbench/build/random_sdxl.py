"""An SDXL-shaped pipeline with random weights, built from configs: for tests and benchmarks, no download.

``"full"`` has the architecture of stabilityai/stable-diffusion-xl-base-1.0 (UNet 2.6B parameters,
CLIP ViT-L and OpenCLIP bigG text encoders, the SDXL VAE): its speed equals the real model's,
since speed does not depend on weight values. ``"tiny"`` keeps the SDXL structure (two text
encoders, ``text_time`` added conditioning, linear-projection transformers) at hidden sizes of
32-64 so it runs on a CPU in a second. The tokenizers are character-level CLIP BPE vocabularies
written to a directory: prompts pad to 77 tokens as with the real ones.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Literal

Size = Literal["tiny", "full"]

UNET = {
    "tiny": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 1),
                 cross_attention_dim=64, addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
                 norm_num_groups=16, sample_size=16),
    "full": dict(block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, norm_num_groups=32, sample_size=128),
}
VAE = {
    "tiny": dict(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8, sample_size=32),
    "full": dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, norm_num_groups=32, sample_size=1024),
}
# (hidden, intermediate, heads, layers, activation); projection_dim = hidden, as in SDXL.
TEXT = {
    "tiny": [(32, 64, 4, 2, "quick_gelu"), (32, 64, 4, 2, "gelu")],
    "full": [(768, 3072, 12, 12, "quick_gelu"), (1280, 5120, 20, 32, "gelu")],
}
CLIP_VOCAB_SIZE = 49408


def write_clip_tokenizer(directory: Path) -> Path:
    """A character-level CLIP BPE tokenizer (``vocab.json``, ``merges.txt``) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return directory


def build_random_sdxl(size: Size, tokenizer_dir: Path, device: str = "cpu", dtype=None, seed: int = 0):
    """A ``StableDiffusionXLPipeline`` with random weights, parameters created directly on ``device``."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    write_clip_tokenizer(tokenizer_dir)
    tokenizers = [CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"),
                                pad_token=pad, model_max_length=77) for pad in ("<|endoftext|>", "!")]
    bos, eos = tokenizers[0].bos_token_id, tokenizers[0].eos_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        encoders = []
        for (hidden, inter, heads, layers, act), cls in zip(TEXT[size], (CLIPTextModel, CLIPTextModelWithProjection)):
            config = CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE if size == "full" else len(tokenizers[0]),
                                    hidden_size=hidden, intermediate_size=inter, num_attention_heads=heads,
                                    num_hidden_layers=layers, projection_dim=hidden, hidden_act=act,
                                    max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
            encoders.append(cls(config))
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, addition_embed_type="text_time",
                                    use_linear_projection=True, **UNET[size])
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, scaling_factor=0.13025,
                            force_upcast=size == "full", **VAE[size])
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                     tokenizer=tokenizers[0], tokenizer_2=tokenizers[1], unet=unet, scheduler=scheduler)
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    return pipe
