"""What local model files looked like (names, sizes, modification times), read without opening them.

Config hashes hold a model's path, not its contents: weights replaced at the same path (a new
checkpoint saved over the old one) would be served predictions, or PIGReward user contexts, made
with the old weights. The stamp goes into those keys; hashing the files instead would read
gigabytes before every resume. A Hugging Face hub id counts with the commit its cached snapshot
resolves to (the cache's ``refs/main``, read without the network): a new commit downloaded into the
cache is predicted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence


def local_files(source: str) -> tuple[Path, list[Path]]:
    """``source`` as a path (``~`` expanded) and, sorted, the file it names or every file under
    the folder it names; no files for a hub id, a served model name or another string. Raises
    OSError for an unreadable folder, ValueError for a string that is no path (a NUL byte)."""
    path = Path(source).expanduser()
    return path, [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment now as huggingface_hub reads it at import:
    ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``
    or ``~/.cache/huggingface/hub``."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(hub)).expanduser()


def is_hub_id(source: str) -> bool:
    """True for a string shaped like a hub repository id (``owner/name``) that is no existing local path."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source)) and not os.path.exists(os.path.expanduser(source))


def hub_commit(source: str) -> Optional[str]:
    """The commit hub model id ``source`` resolves to in the local hub cache (the ``refs/main`` of its
    folder, whose snapshot is there), or None: no hub id, or not cached. Never asks the hub."""
    if not is_hub_id(source):
        return None
    repo = _hub_repo(source)
    try:
        commit = (repo / "refs" / "main").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if commit and (repo / "snapshots" / commit).is_dir() else None


def _hub_repo(source: str) -> Path:
    """The hub cache's folder of hub model id ``source`` (``models--OWNER--NAME``)."""
    return hub_cache_dir() / f"models--{source.replace('/', '--')}"


def uncached_hub_ids(sources: Iterable[str]) -> list[str]:
    """The sources that are hub ids without a cached snapshot (a model loader would download them), sorted."""
    return sorted({s for s in sources if s and is_hub_id(s) and hub_commit(s) is None})


def local_files_stamp(sources: Iterable[str], read_local: bool = True) -> str:
    """Digest of the sources, with (file, size, mtime) for every file of each one that names an
    existing local file or folder (``~`` expanded), and the commit of each hub id with a cached
    snapshot (:func:`hub_commit`); hub ids not cached and other strings count by their text, as
    every source does with ``read_local`` False (model names a server resolves, whatever this
    machine holds under the same name). ``""`` for no sources."""
    entries: list[tuple[str, str, int, int]] = []
    commits: list[tuple[str, str]] = []
    unique = sorted({s for s in sources if s})
    for source in unique if read_local else ():
        if commit := hub_commit(source):
            commits.append((source, commit))
            continue
        try:
            path, files = local_files(source)
            for f in files:
                st = f.stat()
                entries.append((source, f.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
        except (OSError, ValueError):  # unreadable, or not a path at all (a NUL byte): the model loader will say
            continue
    stamped = [unique, entries, commits] if commits else [unique, entries]  # without commits, the keys of earlier versions
    return hashlib.sha256(json.dumps(stamped).encode()).hexdigest()[:12] if unique else ""


def damaged_safetensors(sources: Iterable[str]) -> list[str]:
    """The local ``.safetensors`` files of the sources (a hub id's: those of its cached snapshot) whose
    header safetensors cannot read (zero bytes, truncated, not safetensors), sorted; reads headers only."""
    from safetensors import safe_open

    damaged = set()
    for source in {s for s in sources if s}:
        if commit := hub_commit(source):
            source = str(_hub_repo(source) / "snapshots" / commit)
        try:
            files = [f for f in local_files(source)[1] if f.suffix == ".safetensors"]
        except (OSError, ValueError):
            continue
        for f in files:
            try:
                with safe_open(str(f), framework="numpy"):
                    pass
            except Exception:  # SafetensorError, or OSError for an unreadable file
                damaged.add(str(f))
    return sorted(damaged)


def damaged_message(damaged: Sequence[str], error: object) -> str:
    """The end of an error for damaged weight files (:func:`damaged_safetensors`; none found: "a
    .safetensors weight file of the model"), with the reader's ``error`` and what to do."""
    which = "a .safetensors weight file of the model is"
    if damaged:
        which = f"the weight file {damaged[0]} is" if len(damaged) == 1 else f"the weight files {', '.join(damaged)} are"
    return f"{which} damaged or truncated ({error}); download it again"
