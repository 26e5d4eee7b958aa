"""What local model files looked like (names, sizes, modification times), read without opening them.

Config hashes hold a model's path, not its contents: weights replaced at the same path (a new
checkpoint saved over the old one) would be served predictions, or PIGReward user contexts, made
with the old weights. The stamp goes into those keys; hashing the files instead would read
gigabytes before every resume.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable


def local_files(source: str) -> tuple[Path, list[Path]]:
    """``source`` as a path (``~`` expanded) and, sorted, the file it names or every file under
    the folder it names; no files for a hub id, a served model name or another string. Raises
    OSError for an unreadable folder, ValueError for a string that is no path (a NUL byte)."""
    path = Path(source).expanduser()
    return path, [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []


def local_files_stamp(sources: Iterable[str]) -> str:
    """Digest of the sources, with (file, size, mtime) for every file of each one that names an
    existing local file or folder (``~`` expanded); hub ids, served model names and other strings
    count by their text. ``""`` for no sources."""
    entries: list[tuple[str, str, int, int]] = []
    unique = sorted({s for s in sources if s})
    for source in unique:
        try:
            path, files = local_files(source)
            for f in files:
                st = f.stat()
                entries.append((source, f.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
        except (OSError, ValueError):  # unreadable, or not a path at all (a NUL byte): the model loader will say
            continue
    return hashlib.sha256(json.dumps([unique, entries]).encode()).hexdigest()[:12] if unique else ""


def damaged_safetensors(sources: Iterable[str]) -> list[str]:
    """The local ``.safetensors`` files of the sources whose header safetensors cannot read (zero
    bytes, truncated, not safetensors), sorted; reads headers only."""
    from safetensors import safe_open

    damaged = set()
    for source in {s for s in sources if s}:
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
