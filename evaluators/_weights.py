"""Finding and strictly loading published checkpoints (shared by the model-based evaluators).

A weight is named by a *spec*: a local file, a local folder holding the expected file name, an
``https://`` URL (downloaded once into ``$PIGBENCH_WEIGHTS_DIR``, default ``~/.cache/pigbench/weights``)
or a Hugging Face Hub repository id (``hf_hub_download``; with ``HF_HUB_OFFLINE=1``, or when the hub
does not answer, only the local cache is used). :func:`check_file` validates a spec without downloading; :func:`fetch_file`
returns a local path. Both raise :class:`~pigbench.evaluator.RequirementError` naming the file,
where it was looked for (once), where to get it, and the flag and environment variable that point
to a local copy.

:func:`read_state_dict` reads safetensors, ``torch.save`` state dicts (``weights_only=True``), and
pickled whole ``nn.Module`` objects (the MPS release) through an unpickler that imports no class
and runs no code: unknown classes become inert placeholders from which the tensors are read.
:func:`load_strict` fails on any missing or unexpected key.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from pigbench.checkpoint import CheckpointError, check_keys
from pigbench.evaluator import RequirementError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class WeightFile:
    """What a weight file is and where it comes from, for lookups and error messages."""

    evaluator: str
    what: str  # e.g. "the HPS v2.1 checkpoint"
    filename: str  # file name inside a hub repo or a local folder
    env_var: str
    source: str  # human hint: where to download it
    flag: str = "--model-path"
    also: tuple[str, ...] = ()  # other names of the file (re-exports) looked for in a folder


def _is_url(spec: str) -> bool:
    return spec.startswith(("https://", "http://"))


def _is_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not os.path.exists(spec)


def _weights_dir() -> Path:
    return Path(os.environ.get("PIGBENCH_WEIGHTS_DIR", "~/.cache/pigbench/weights")).expanduser()


def _url_target(spec: str) -> Path:
    from urllib.parse import unquote, urlparse

    return _weights_dir() / unquote(os.path.basename(urlparse(spec).path))


def _missing(wf: WeightFile, problem: str, names: str = "") -> RequirementError:
    """The error for a weight that cannot be had: "<evaluator>: <what> (<names>) <problem>.", then
    where to get it and the flag and environment variable that point to a local copy. ``names``
    (default ``wf.filename``) says which file was expected; ``problem`` says where it was looked for."""
    return RequirementError(
        f"{wf.evaluator}: {wf.what} ({names or wf.filename}) {problem}. Get it from {wf.source}, "
        f"then pass the file or its folder with {wf.flag} or the environment variable {wf.env_var}."
    )


def _in_repo(wf: WeightFile, repo_id: str) -> str:
    """The expected file named with its hub repository, for :func:`_missing`."""
    return f"{wf.filename} in the hub repository {repo_id}"


def check_file(spec: str, wf: WeightFile) -> None:
    """Raise if the weight cannot be had: a local path must exist; a hub file or URL must be cached,
    or downloadable now (not with HF_HUB_OFFLINE=1, and its server must answer)."""
    from pigbench.hub import downloads_unavailable, not_downloadable

    if not spec:
        raise _missing(wf, "has no default download location")
    if _is_url(spec):
        if not _url_target(spec).exists():
            from urllib.parse import urlsplit

            url = urlsplit(spec)
            why = downloads_unavailable(f"{url.scheme}://{url.netloc}/")
            if why:
                raise _missing(wf, f"is not in {_weights_dir()} and cannot be downloaded from {spec} ({why})")
        return
    if _is_hub_id(spec):
        from huggingface_hub import try_to_load_from_cache

        problem = not_downloadable(cached=isinstance(try_to_load_from_cache(spec, wf.filename), str))
        if problem:
            raise _missing(wf, problem, _in_repo(wf, spec))
        return
    _local_file(spec, wf)


CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".safetensors"})


def _local_file(spec: str, wf: WeightFile) -> Path:
    """``spec`` itself if it is a file of the wanted kind (any checkpoint for a checkpoint, under any
    name; else the same suffix), else ``wf.filename`` (or, failing that, one of ``wf.also``) in
    ``spec`` (a folder), or ``wf.filename`` beside it (a file of another kind: a model's config
    next to its checkpoint)."""
    given = Path(spec).expanduser()
    wanted = Path(wf.filename).suffix
    if given.is_dir():
        names = (wf.filename, *wf.also)
        path = next((given / n for n in names if (given / n).is_file()), None)
        if path is None:
            raise _missing(wf, f"was not found in the folder {str(given)!r}", " or ".join(names))
        return path
    if given.is_file() and wanted not in CHECKPOINT_SUFFIXES and given.suffix != wanted:
        path = given.with_name(wf.filename)
        if not path.is_file():
            raise _missing(wf, f"was not found beside {str(given)!r}: there is no {str(path)!r}")
        return path
    if not given.is_file():
        raise _missing(wf, f"was not found at {str(given)!r}")
    return given


def fetch_file(spec: str, wf: WeightFile) -> Path:
    """A local path for the weight named by ``spec``, downloading it if allowed and needed."""
    check_file(spec, wf)
    if _is_url(spec):
        target = _url_target(spec)
        if not target.exists():
            import torch

            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(spec, str(target))
            except Exception as exc:  # network and HTTP errors of urllib
                raise _missing(wf, f"could not be downloaded from {spec} ({type(exc).__name__}: {exc})") from None
        return target
    if _is_hub_id(spec):
        from huggingface_hub import hf_hub_download

        from pigbench.hub import cache_only

        try:
            return Path(hf_hub_download(spec, wf.filename, local_files_only=cache_only(spec)))
        except Exception as exc:
            raise _missing(wf, f"could not be downloaded ({type(exc).__name__}: {exc})", _in_repo(wf, spec)) from None
    return _local_file(spec, wf)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(spec: str, model: Any = None) -> str:
    """A revision or content hash for provenance and cache keys.

    A local file gives its SHA-256; a local folder the SHA-256 of its files' hashes; a hub id the
    commit of its cached snapshot (or, with older transformers, of the loaded model's config).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return "sha256:" + file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path)}:{file_sha256(f)}\n".encode())
        return "sha256-dir:" + digest.hexdigest()
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit is None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
        commit = Path(cached).parent.name if isinstance(cached, str) else None
    return f"hub:{spec}@{commit or 'unknown-revision'}"


# ------------------------------------------------------------------------------------------
# Reading checkpoints


class _Inert:
    """Stands in for any class named in a pickle: records constructor arguments and state only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_pickled_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_pickled_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:  # dict subclasses pickled with SETITEMS
        self.__dict__.setdefault("_pickled_items", {})[key] = value

    def append(self, value: Any) -> None:  # list subclasses pickled with APPENDS
        self.__dict__.setdefault("_pickled_list", []).append(value)


class _InertUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding functions and plain containers; every other class is inert."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("collections", "OrderedDict"),
        ("copyreg", "_reconstructor"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    }

    def find_class(self, module: str, name: str) -> Any:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)  # protocol 2 names (__builtin__, copy_reg)
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        return type(name, (_Inert,), {"__module__": f"inert:{module}"})


class _InertPickleModule:
    """A ``pickle_module`` for ``torch.load`` that uses :class:`_InertUnpickler`."""

    Unpickler = _InertUnpickler
    load = staticmethod(lambda f, **kw: _InertUnpickler(f, **kw).load())
    __name__ = "pigbench_inert_pickle"


def _module_state(obj: Any, prefix: str = "") -> dict[str, "torch.Tensor"]:
    """The persistent parameters and buffers of an unpickled (inert) ``nn.Module`` tree."""
    import torch

    state = vars(obj)
    out: dict[str, torch.Tensor] = {}
    for name, value in (state.get("_parameters") or {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach()
    skip = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor) and name not in skip:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(_module_state(child, f"{prefix}{name}."))
    return out


def read_state_dict(path: Path, what: str = "checkpoint") -> dict[str, "torch.Tensor"]:
    """The tensors of a checkpoint file, keyed as in the model that saved it.

    Accepts safetensors, a state dict (optionally under ``"state_dict"``, optionally with a
    ``module.`` prefix from DataParallel), or a pickled whole module.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # names classes: read it without importing them
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_InertPickleModule)
    except Exception as exc:
        raise CheckpointError(f"{what} at {path} could not be read: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, _Inert):
        obj = _module_state(obj)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{what} at {path} holds no state dict of tensors")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _is_position_ids(key: str, value: "torch.Tensor") -> bool:
    """Older transformers saved ``position_ids`` (an arange) as a persistent buffer; newer ones don't."""
    import torch

    return key.endswith("position_ids") and torch.equal(value.flatten().long(), torch.arange(value.numel()))


def load_strict(module: "torch.nn.Module", state: Mapping[str, "torch.Tensor"], what: str, source: str) -> None:
    """Load ``state`` (read from ``source``) into ``module``; any missing, unexpected or misshaped key
    is a CheckpointError (:func:`pigbench.checkpoint.check_keys`).

    The one tolerated difference is a saved ``position_ids`` buffer that equals ``arange``.
    """
    expected = module.state_dict()
    check_keys(what, source, missing=expected.keys() - state.keys(),
               unexpected=[k for k in state if k not in expected and not _is_position_ids(k, state[k])],
               mismatched=[k for k in expected.keys() & state.keys() if state[k].shape != expected[k].shape])
    try:
        module.load_state_dict({k: state[k] for k in expected}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{what} at {source!r} does not match the model: {exc}") from None
