"""Where files are: a local path, an environment variable, or the Hugging Face hub.

:func:`resolve_root` returns a dataset's local directory, trying in order the ``--dataset-path``
value, the adapter's environment variable, then the hub (``snapshot_download`` of only the files
matching ``allow_patterns``). With ``HF_HUB_OFFLINE=1``, or when the hub cannot be reached, only
the local hub cache is used. Every failure is a :class:`DatasetError` saying what to download,
how, and which flag or variable points to it.

:func:`unreachable` asks once per process, with one request and no retries, whether a server
answers, so that a machine without internet gets a clear error at once instead of the hub
library's retries (about 25 s per file) and a traceback. :func:`cache_only` tells model loaders
when to pass ``local_files_only``, and :func:`model_folder_hint` what to do about an incomplete model folder.

:func:`remote_files` lists a hub dataset's files for reading parts of them in place (parquet row
groups over HTTP range requests), for data too large to download whole.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from pigbench.adapter import DatasetError

_TRUE = ("1", "true", "yes", "on")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set now (read at call time, unlike the hub library's constant)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def endpoint() -> str:
    """The hub's address (``HF_ENDPOINT``, as the hub library reads it)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@functools.cache
def unreachable(url: str, timeout: float = 5.0) -> Optional[str]:
    """Why the server of ``url`` does not answer (one HEAD request, no retries, proxies from the
    environment), or None when it answers, with any HTTP status. Asked once per process and URL."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, bad URLs
        reason = getattr(exc, "reason", None) or exc
        return f"{url} does not answer: {reason}"
    return None


def downloads_unavailable(url: Optional[str] = None) -> Optional[str]:
    """Why files cannot be downloaded from ``url`` (default: the hub) now: "HF_HUB_OFFLINE=1", or the
    server does not answer; None when they can."""
    return "HF_HUB_OFFLINE=1" if is_offline() else unreachable(url or endpoint())


def cache_only(source: str) -> bool:
    """True when ``source``, a hub id, must come from the local cache (see :func:`downloads_unavailable`);
    False for a local path. For ``from_pretrained(source, local_files_only=cache_only(source))``."""
    return not os.path.exists(source) and downloads_unavailable() is not None


def not_downloadable(cached: bool) -> Optional[str]:
    """Why a hub file that is (``cached``) or is not in the local cache cannot be had now, or None."""
    why = None if cached else downloads_unavailable()
    return f"is not in the local Hugging Face cache and {why}" if why else None


def local_copy_hint(flag: str, env_var: str = "") -> str:
    """How to point pigbench to a local copy: "pass --model-path DIR or set ENV=DIR" (a flag ending
    in "=", such as "--option clip_path=", takes DIR without a space)."""
    arg = f"{flag}DIR" if flag.endswith("=") else f"{flag} DIR"
    return f"pass {arg}" + (f" or set {env_var}=DIR" if env_var else "")


def model_folder_hint(repo_id: str, flag: str, env_var: str = "") -> str:
    """What to do about an incomplete local model folder: download the whole folder of ``repo_id``
    and point pigbench to it (``flag``, or ``env_var`` if not empty)."""
    return (f"download the whole model folder (`hf download {repo_id} --local-dir DIR`), "
            f"then {local_copy_hint(flag, env_var)}")


def download_hint(repo_id: str, patterns: Sequence[str], flag: str, env_var: str) -> str:
    """The command that downloads ``patterns`` of ``repo_id``, and how to point the adapter to it."""
    include = " ".join(f"--include '{p}'" for p in patterns)
    return (f"download it with `hf download {repo_id} --repo-type dataset {include} --local-dir DIR`, "
            f"then {local_copy_hint(flag, env_var)}")


def resolve_root(
    *, what: str, path: Optional[str], env_var: str, repo_id: Optional[str] = None,
    allow_patterns: Sequence[str] = (), revision: Optional[str] = None, flag: str = "--dataset-path",
    source: str = "",
) -> Path:
    """The local directory holding ``what``; see the module docstring for the search order.
    ``source`` (for data not on the hub) says how to get a copy, e.g. "get it from URL"."""
    for value, origin in ((path, flag), (os.environ.get(env_var) if env_var else None, env_var)):
        if value:
            root = Path(value).expanduser()
            if not root.exists():
                raise DatasetError(f"{what}: {origin} points to {str(root)!r}, which does not exist")
            return root
    if repo_id is None:
        raise DatasetError(f"{what}: no local copy given; " + (f"{source}, then " if source else "")
                           + local_copy_hint(flag, env_var))
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise DatasetError(
            f"{what}: huggingface_hub is not installed (pip install 'pigbench[data]'); or "
            + download_hint(repo_id, allow_patterns, flag, env_var)
        ) from None
    local_only = cache_only(repo_id)
    try:
        local = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, allow_patterns=list(allow_patterns) or None,
            local_files_only=local_only, cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except Exception as exc:  # the hub library raises many types (offline, HTTP, missing repo)
        state = f"it {not_downloadable(cached=False)}" if local_only else f"the hub failed: {' '.join(str(exc).split())}"
        raise DatasetError(f"{what}: cannot get {repo_id} ({state}); " + download_hint(repo_id, allow_patterns, flag, env_var)) from None
    return Path(local)


def remote_files(repo_id: str, pattern: str, *, what: str, hint: str) -> tuple[Any, list[str]]:
    """An fsspec filesystem for the hub and the sorted paths in ``repo_id`` matching ``pattern``.

    Raises :class:`DatasetError` (with ``hint``) when huggingface_hub is not installed, when offline
    or when the listing fails.
    """
    try:
        from huggingface_hub import HfFileSystem
    except ImportError:
        raise DatasetError(f"{what}: huggingface_hub is not installed (pip install 'pigbench[data]'); or {hint}") from None
    why = downloads_unavailable()
    if why:
        raise DatasetError(f"{what}: {repo_id} cannot be read from the hub ({why}); {hint}")
    try:
        fs = HfFileSystem()
        names = fs.glob(f"datasets/{repo_id}/{pattern}")
    except Exception as exc:
        raise DatasetError(f"{what}: cannot list {repo_id} on the hub ({' '.join(str(exc).split())}); {hint}") from None
    names = sorted(n for n in names if fnmatch.fnmatch(n.rsplit("/", 1)[-1], pattern.rsplit("/", 1)[-1]))
    if not names:
        raise DatasetError(f"{what}: no file matching {pattern!r} in {repo_id}; {hint}")
    return fs, names
