"""Loading a local LVLM (an image-text-to-text transformers model and its processor), for the local
judge backend (:class:`~pigbench.judging.local_backend.LocalBackend`) and PIGReward's reasoner and
reward model (:class:`~pigbench.fastgen.backend.FastLocalBackend`).

:func:`load_lvlm` loads the processor first (:func:`pigbench.checkpoint.load_processor`: a folder
without processor, tokenizer or chat template files fails before the weights load), then the model
strictly (:func:`pigbench.checkpoint.from_pretrained_strict`) in the asked dtype and attention
implementation on one device, then merges an optional PEFT/LoRA adapter in, as strictly: an adapter
tensor that matches no module, a module's tensor absent from the file, an unreadable
``adapter_config.json`` or weight file, or tensors shaped for another base model are each a one-line
:class:`~pigbench.checkpoint.CheckpointError` naming the adapter. The per-image pixel budget is not
set here: the backends pass it to the processor at call time (see :mod:`pigbench.judging.local_backend`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pigbench.checkpoint import CheckpointError, check_keys, from_pretrained_strict, load_processor
from pigbench.file_stamp import damaged_message, damaged_safetensors
from pigbench.hub import local_copy_hint

# Adapters trained with transformers < 4.52 name Qwen2-VL's modules visual.* and model.layers.*; the model
# has model.visual.* and model.language_model.*. transformers 5 renames such base checkpoints itself
# (conversion_mapping.py, Qwen2VLForConditionalGeneration: these two patterns) but gives peft no
# _checkpoint_conversion_mapping any more, so without them such an adapter matches no module.
_LEGACY_QWEN2VL_KEYS = {"^visual": "model.visual", r"^model(?!\.(language_model|visual))": "model.language_model"}


def torch_dtype(dtype: str, device: str) -> Any:
    """The torch dtype named ``dtype``; "auto" is bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_lvlm(path: str, name: str, *, device: str = "cpu", dtype: str = "auto", attn_implementation: str = "sdpa",
              adapter: str = "", hint: str = "", model_flag: str = "--model-path") -> tuple[Any, Any]:
    """(model in eval mode, processor) from a hub id or local folder ``path``; see the module docstring.

    ``name`` words the errors ("the {name} model at ...", "the {name} adapter at ..."); ``dtype``: see
    :func:`torch_dtype`; ``adapter``: a PEFT adapter folder to merge in ("" for none); ``hint``: what to
    do about an incomplete folder (ends its message); ``model_flag``: the flag that names the base
    model, which an adapter trained on another base model's message tells the user to pass."""
    from transformers import AutoModelForImageTextToText

    what = f"the {name} model"
    processor = load_processor(path, what, hint)
    model = from_pretrained_strict(AutoModelForImageTextToText, path, what, hint, dtype=torch_dtype(dtype, device),
                                   attn_implementation=attn_implementation, device_map={"": device})
    if adapter:
        model = _merge_adapter(model, adapter, path, f"the {name} adapter", model_flag)
    return model.eval(), processor


def _merge_adapter(model: Any, adapter: str, base: str, what: str, model_flag: str) -> Any:
    """``model`` (loaded from ``base``) with the PEFT adapter at ``adapter`` merged in. An adapter tensor
    that matches no module of the model, or a module's adapter tensor absent from the file, is a
    CheckpointError naming ``what`` at ``adapter`` (``PeftModel.from_pretrained`` ignores the first, only
    warns on the second, and leaves those modules without the adapter or with its initial weights); so is
    an adapter_config.json that is not JSON, a damaged ``.safetensors`` file (peft's and safetensors'
    errors name no file), and an adapter whose tensors have other shapes than ``base``'s layers (one
    trained on another base model: torch's multi-line size-mismatch traceback)."""
    import torch
    from peft import PeftConfig, PeftModel

    try:
        config = PeftConfig.from_pretrained(adapter)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{what} at {adapter!r} could not be read: "
                              f"{os.path.join(adapter, 'adapter_config.json')} is not valid JSON ({exc})") from None
    config.inference_mode = True
    net = PeftModel(model, config)
    renamed = hasattr(getattr(model, "model", None), "language_model")  # the layout of transformers >= 4.52
    try:
        result = net.load_adapter(adapter, "default", key_mapping=_LEGACY_QWEN2VL_KEYS if renamed else None)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError:  # peft's load_state_dict(strict=False) raises only for tensors of another shape
        raise CheckpointError(f"{what} at {adapter!r} does not fit the model at {base!r}: its tensors have "
                              "other shapes than that model's layers, so it was trained on another base model (its "
                              f"adapter_config.json names {config.base_model_name_or_path!r}); give that base model "
                              f"({local_copy_hint(model_flag)})") from None
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":
            raise
        raise CheckpointError(f"{what} at {adapter!r} could not be read: "
                              f"{damaged_message(damaged_safetensors([adapter]), exc)}") from None
    check_keys(what, adapter, result.missing_keys, result.unexpected_keys)
    return net.merge_and_unload()
