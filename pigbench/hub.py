"""Where a dataset's files are: a local path, an environment variable, or the Hugging Face hub.

:func:`resolve_root` returns a local directory, trying in order the ``--dataset-path`` value, the
adapter's environment variable, then the hub (``snapshot_download`` of only the files matching
``allow_patterns``). With ``HF_HUB_OFFLINE=1`` only the local hub cache is used. Every failure is
a :class:`DatasetError` saying what to download, how, and which flag or variable points to it.

:func:`remote_files` lists a hub dataset's files for reading parts of them in place (parquet row
groups over HTTP range requests), for data too large to download whole.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from pigbench.adapter import DatasetError

_TRUE = ("1", "true", "yes", "on")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set now (read at call time, unlike the hub library's constant)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def download_hint(repo_id: str, patterns: Sequence[str], flag: str, env_var: str) -> str:
    """The command that downloads ``patterns`` of ``repo_id``, and how to point the adapter to it."""
    include = " ".join(f"--include '{p}'" for p in patterns)
    where = f"pass {flag} DIR" + (f" or set {env_var}=DIR" if env_var else "")
    return f"download it with `hf download {repo_id} --repo-type dataset {include} --local-dir DIR`, then {where}"


def resolve_root(
    *, what: str, path: Optional[str], env_var: str, repo_id: Optional[str] = None,
    allow_patterns: Sequence[str] = (), revision: Optional[str] = None, flag: str = "--dataset-path",
) -> Path:
    """The local directory holding ``what``; see the module docstring for the search order."""
    for value, origin in ((path, flag), (os.environ.get(env_var) if env_var else None, env_var)):
        if value:
            root = Path(value).expanduser()
            if not root.exists():
                raise DatasetError(f"{what}: {origin} points to {str(root)!r}, which does not exist")
            return root
    if repo_id is None:
        raise DatasetError(f"{what}: no local copy given; pass {flag} DIR" + (f" or set {env_var}=DIR" if env_var else ""))
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise DatasetError(
            f"{what}: huggingface_hub is not installed (pip install 'pigbench[data]'); or "
            + download_hint(repo_id, allow_patterns, flag, env_var)
        ) from None
    offline = is_offline()
    try:
        local = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, allow_patterns=list(allow_patterns) or None,
            local_files_only=offline, cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except Exception as exc:  # the hub library raises many types (offline, HTTP, missing repo)
        state = "HF_HUB_OFFLINE=1 and it is not in the local hub cache" if offline else f"the hub failed: {exc}"
        raise DatasetError(f"{what}: cannot get {repo_id} ({state}); " + download_hint(repo_id, allow_patterns, flag, env_var)) from None
    return Path(local)


def remote_files(repo_id: str, pattern: str, *, what: str, hint: str) -> tuple[Any, list[str]]:
    """An fsspec filesystem for the hub and the sorted paths in ``repo_id`` matching ``pattern``.

    Raises :class:`DatasetError` (with ``hint``) when offline or when the listing fails.
    """
    if is_offline():
        raise DatasetError(f"{what}: HF_HUB_OFFLINE=1, so {repo_id} cannot be read from the hub; {hint}")
    try:
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        names = fs.glob(f"datasets/{repo_id}/{pattern}")
    except Exception as exc:
        raise DatasetError(f"{what}: cannot list {repo_id} on the hub ({exc}); {hint}") from None
    names = sorted(n for n in names if fnmatch.fnmatch(n.rsplit("/", 1)[-1], pattern.rsplit("/", 1)[-1]))
    if not names:
        raise DatasetError(f"{what}: no file matching {pattern!r} in {repo_id}; {hint}")
    return fs, names
