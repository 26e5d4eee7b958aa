"""Loading transformers checkpoints strictly, for every evaluator that loads one (scalar rewards,
similarity metrics, local LVLM judges, PIGReward).

transformers' ``from_pretrained`` only warns when a checkpoint lacks a tensor of the model, holds
one the model does not have, or holds one of another shape, and leaves those weights random: a
truncated download or an export with renamed keys then produces plausible but meaningless
scores. :func:`from_pretrained_strict` makes each of these a one-line :class:`CheckpointError`, and
so is a local model folder without its weight file. :func:`load_processor`, :func:`load_tokenizer`
and :func:`load_image_processor` do the same for one without its processor, tokenizer or chat
template files: transformers 5 builds a model's tokenizer class from its defaults when the folder
holds no vocabulary (Qwen2-VL: one token; CLIP: every word unknown) and uses the class's default
special tokens without ``tokenizer_config.json``, so a run would silently use another tokenizer than
the folder's; without ``tokenizer.json`` a generic tokenizer fails with a multi-line ValueError, and
without processor files the message points at huggingface.co.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

from pigbench.evaluator import RequirementError
from pigbench.file_stamp import damaged_message, damaged_safetensors
from pigbench.hub import cache_only


# The weight files transformers' from_pretrained looks for in a local folder (one file, or a sharded index).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# An image processor's config: processor_config.json (transformers 5 saves it there) or preprocessor_config.json.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
# A saved tokenizer's settings (class, special tokens) and its vocabulary: tokenizers' serialization,
# or a slow tokenizer's files (BPE vocabulary and merges, SentencePiece, WordPiece), any one complete group.
TOKENIZER_CONFIG = "tokenizer_config.json"
VOCABULARY_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",), ("spiece.model",),
                    ("sentencepiece.bpe.model",), ("vocab.txt",))
# Tokenizer classes that are built only from tokenizer.json (transformers 5 and 4 names).
_SERIALIZED_ONLY = ("TokenizersBackend", "PreTrainedTokenizerFast")
# Where a processor's chat template is saved (transformers 5 writes the first).
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class CheckpointError(RequirementError):
    """A weight file exists but is not the checkpoint the evaluator expects, or a model folder is incomplete."""


def from_pretrained_strict(model_class: Any, source: str, what: str, hint: str = "", **kwargs: Any) -> Any:
    """``model_class.from_pretrained(source, **kwargs)``, but a local folder without config.json or
    without a weight file (:data:`WEIGHT_FILES`), an unreadable weight file, a config of another
    model type, or any missing, unexpected or misshaped key is a one-line CheckpointError naming
    ``source`` (and a damaged ``.safetensors`` file; transformers would warn and leave weights random);
    an incomplete folder's message ends with ``hint`` (what to do, e.g. :func:`pigbench.hub.model_folder_hint`).
    Other files that cannot be found still raise OSError. ``kwargs``: further ``from_pretrained``
    arguments (``dtype``, ``attn_implementation``, ``device_map``).

    transformers 5 reports no key for a clean save: tied weights (``lm_head`` with
    ``tie_word_embeddings``), non-persistent buffers and renamed legacy keys (Qwen2-VL's
    ``model.`` prefix) are left out of ``missing_keys``/``unexpected_keys`` by transformers itself."""
    check_config_file(source, what, hint)
    try:
        model, info = model_class.from_pretrained(source, local_files_only=cache_only(source),
                                                  output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except OSError:
        if _folder_lacks(source, WEIGHT_FILES):
            raise CheckpointError(_incomplete(what, source, f"no weight file ({', '.join(WEIGHT_FILES)}) in the folder",
                                              hint)) from None
        raise
    except Exception as exc:  # safetensors header errors, config errors of transformers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        damaged = damaged_safetensors([source]) if type(exc).__name__ == "SafetensorError" else []
        if damaged:
            raise CheckpointError(f"{what} at {source!r} could not be read: {damaged_message(damaged, first)}") from None
        raise CheckpointError(f"{what} at {source!r} could not be read: {type(exc).__name__}: {first}") from None
    wanted = getattr(getattr(model_class, "config_class", None), "model_type", None)
    if wanted and model.config.model_type != wanted:
        raise CheckpointError(f"{what} at {source!r} is a {model.config.model_type!r} model, not {wanted!r}")
    check_keys(what, source, info["missing_keys"], info["unexpected_keys"],
               [k for k, *_ in info.get("mismatched_keys") or ()])
    return model


def check_keys(what: str, source: str, missing: Sequence[str], unexpected: Sequence[str],
               mismatched: Optional[Sequence[str]] = None) -> None:
    """A CheckpointError naming ``what`` at ``source`` and the first five keys of each kind (sorted)
    if any key is missing, unexpected or (where ``mismatched`` is given) misshaped."""
    missing, unexpected, misshaped = sorted(missing), sorted(unexpected), sorted(mismatched or ())
    if missing or unexpected or misshaped:
        shapes = "" if mismatched is None else f", {len(misshaped)} misshaped key(s) {misshaped[:5]}"
        raise CheckpointError(f"{what} at {source!r} does not match the model: {len(missing)} missing key(s) "
                              f"{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}{shapes}")


def check_config_file(source: str, what: str, hint: str = "") -> None:
    """A one-line CheckpointError (naming ``source``, ending with ``hint``) when ``source`` is a local
    folder without ``config.json``; transformers' own OSError runs to several lines."""
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "config.json")):
        raise CheckpointError(_incomplete(what, source, "config.json not found in the folder", hint))


def load_processor(source: str, what: str, hint: str = "") -> Any:
    """``AutoProcessor.from_pretrained(source)`` of an image-text-to-text model. A local folder must
    hold the image processor's config (:data:`PROCESSOR_FILES`), the tokenizer's files (see
    :func:`check_tokenizer_files`) and a chat template (:data:`CHAT_TEMPLATE_FILES`): otherwise a
    one-line CheckpointError naming ``source`` and ending with ``hint``. Files are read from the
    folder only. Other failures raise as transformers raises them."""
    from transformers import AutoProcessor

    check_tokenizer_files(source, what, hint)
    check_image_processor_files(source, what, hint)
    processor = AutoProcessor.from_pretrained(source, local_files_only=cache_only(source))
    if os.path.isdir(source) and getattr(processor, "chat_template", None) is None:
        raise CheckpointError(_incomplete(what, source, f"no chat template ({' or '.join(CHAT_TEMPLATE_FILES)}) "
                                          "in the folder", hint))
    return processor


def load_tokenizer(source: str, what: str, hint: str = "") -> Any:
    """``AutoTokenizer.from_pretrained(source)``; a local folder without its tokenizer files is a
    one-line CheckpointError (:func:`check_tokenizer_files`). Files are read from the folder only."""
    from transformers import AutoTokenizer

    check_tokenizer_files(source, what, hint)
    return AutoTokenizer.from_pretrained(source, local_files_only=cache_only(source))


def load_image_processor(source: str, what: str, hint: str = "") -> Any:
    """``AutoImageProcessor.from_pretrained(source)``; a local folder without the image processor's
    config (:data:`PROCESSOR_FILES`) is a one-line CheckpointError naming ``source`` and ending with ``hint``."""
    from transformers import AutoImageProcessor

    check_image_processor_files(source, what, hint)
    return AutoImageProcessor.from_pretrained(source, local_files_only=cache_only(source))


def check_image_processor_files(source: str, what: str, hint: str = "") -> None:
    """A one-line CheckpointError (naming ``source``, ending with ``hint``) when ``source`` is a local
    folder without the image processor's config (any of :data:`PROCESSOR_FILES`); the one message of
    :func:`load_processor` and :func:`load_image_processor`."""
    if _folder_lacks(source, PROCESSOR_FILES):
        raise CheckpointError(_incomplete(what, source, f"no image processor config ({' or '.join(PROCESSOR_FILES)}) "
                                          "in the folder", hint))


def check_tokenizer_files(source: str, what: str, hint: str = "") -> None:
    """A one-line CheckpointError (naming ``source``, ending with ``hint``) when ``source`` is a local
    folder without :data:`TOKENIZER_CONFIG`, without any complete group of :data:`VOCABULARY_FILES`,
    or without ``tokenizer.json`` while its tokenizer config names a class built only from it.
    transformers would otherwise load a tokenizer other than the folder's (see the module docstring)."""
    if not os.path.isdir(source):
        return
    if not os.path.isfile(os.path.join(source, TOKENIZER_CONFIG)):
        raise CheckpointError(_incomplete(what, source, f"{TOKENIZER_CONFIG} not found in the folder", hint))
    if not any(all(os.path.isfile(os.path.join(source, n)) for n in group) for group in VOCABULARY_FILES):
        groups = [" and ".join(group) for group in VOCABULARY_FILES]
        listed = ", ".join(groups[:-1]) + f" or {groups[-1]}"
        raise CheckpointError(_incomplete(what, source, f"no tokenizer vocabulary ({listed}) in the folder", hint))
    if not os.path.isfile(os.path.join(source, "tokenizer.json")):
        try:
            with open(os.path.join(source, TOKENIZER_CONFIG), encoding="utf-8") as f:
                declared = json.load(f).get("tokenizer_class")
        except (OSError, ValueError, AttributeError):
            return  # an unreadable config: transformers names the problem
        if declared in _SERIALIZED_ONLY:
            raise CheckpointError(_incomplete(what, source, f"tokenizer.json not found in the folder ({TOKENIZER_CONFIG} "
                                              f"names {declared}, which is built from it)", hint))


def _folder_lacks(source: str, names: Sequence[str]) -> bool:
    """True when ``source`` is a local folder holding none of ``names``."""
    return os.path.isdir(source) and not any(os.path.isfile(os.path.join(source, n)) for n in names)


def _incomplete(what: str, source: str, missing: str, hint: str) -> str:
    """The one-line message of an incomplete model folder."""
    return f"{what} at {source!r} is incomplete: {missing}" + (f"; {hint}" if hint else "")
