"""Image features by content hash for one model key: in memory, and optionally on disk.

On disk, everything for one key lives in ``<directory>/embeddings/<sha256(model key)[:16]>/``:

* ``key.json``: the full model key (model id, revision or file hash, preprocessing, dtype), written
  by :func:`~pigbench.atomic_file.write_atomic` when the folder is opened and the file does not hold
  this key already (missing, or torn by a writer of an earlier version killed mid-write);
* ``<writer>.pt``: one file per stored batch, a dict ``{image hash: feature}`` written by
  :func:`~pigbench.atomic_file.write_atomic` (a temporary file of its own, then rename), so one file
  write serves a whole encoded batch; the temporary file of a writer killed mid-write, and those of
  earlier versions (``<writer>.pt[.<host>].tmp``), are removed when the directory is next opened
  (:func:`~pigbench.atomic_file.remove_stale_temps`: its process is gone, or it is a day old);
* ``index.tsv``: one line ``<image hash>\\t<file name>`` per feature, appended after its file exists.

A run killed between the two leaves a file no line names (ignored); a partial last line is ignored.
A damaged file, or one that lacks a hash its index line names, is forgotten: its features are embedded again.
Several processes (the ranks of a data-parallel run) may write the same directory: file names are
unique per process and each batch's lines are appended in one write.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from pigbench.atomic_file import TEMP_NAME, remove_stale_temps, write_atomic

_LINE = re.compile(r"^([0-9a-f]{64})\t([0-9a-f-]+\.pt)$")
# The temporary names of earlier versions, written beside the file (no host: the oldest).
_EARLIER_TEMP = re.compile(r"(?P<pid>[0-9]+)-[0-9a-f]{12}\.pt(?:\.(?P<host>[0-9a-f]{8}))?\.tmp")


class EmbeddingCache:
    """Features by image hash for one model key; see the module docstring for the disk layout."""

    def __init__(self, model_key: str, directory: Optional[Union[str, Path]] = None) -> None:
        self.model_key = model_key
        self.memory: dict[str, torch.Tensor] = {}
        self.disk_hits = 0  # features read from disk
        self.directory: Optional[Path] = None
        self._on_disk: dict[str, str] = {}  # image hash -> file name, from index.tsv
        if directory:
            self.directory = Path(directory) / "embeddings" / hashlib.sha256(model_key.encode()).hexdigest()[:16]
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.directory, TEMP_NAME, _EARLIER_TEMP)
            self._write_key()
            self._read_index()

    def __contains__(self, image_hash: str) -> bool:
        return image_hash in self.memory or image_hash in self._on_disk

    def get(self, image_hash: str) -> Optional[torch.Tensor]:
        """The feature, or None; a feature on disk is loaded with the rest of its file. A file that is
        damaged (unreadable, or not a dict of hash -> tensor) or lacks the hash its index line names
        is forgotten: of the hashes the index names it for, only those it holds stay cached."""
        hit = self.memory.get(image_hash)
        if hit is None and image_hash in self._on_disk:
            name = self._on_disk[image_hash]
            stored = self._load(name)
            for h, feature in stored.items():
                if h not in self.memory:
                    self.memory[h] = feature
                    self.disk_hits += 1
            if image_hash not in stored:  # what the file holds is in memory now
                self._on_disk = {h: n for h, n in self._on_disk.items() if n != name}
            hit = self.memory.get(image_hash)
        return hit

    def _load(self, name: str) -> dict[str, torch.Tensor]:
        """The features stored in file ``name``; none if it is damaged."""
        assert self.directory is not None
        try:
            stored = torch.load(self.directory / name, map_location="cpu", weights_only=True)
        except Exception:
            return {}
        if not (isinstance(stored, dict)
                and all(isinstance(h, str) and isinstance(f, torch.Tensor) for h, f in stored.items())):
            return {}
        return stored

    def put_many(self, features: Mapping[str, torch.Tensor]) -> None:
        """Keep ``features`` (hash -> CPU tensor); on disk, as one file and its index lines."""
        self.memory.update(features)
        if self.directory is None or not features:
            return
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}.pt"
        buffer = io.BytesIO()
        torch.save(dict(features), buffer)
        write_atomic(self.directory / name, buffer.getvalue())
        with open(self.directory / "index.tsv", "a", encoding="ascii") as index:
            index.write("".join(f"{h}\t{name}\n" for h in features))
        self._on_disk.update((h, name) for h in features)

    def _write_key(self) -> None:
        """Make ``key.json`` hold this model key, written whole; one that holds it already is left as is."""
        assert self.directory is not None
        path = self.directory / "key.json"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, unreadable or torn
            stored = None
        if not (isinstance(stored, dict) and stored.get("model_key") == self.model_key):
            write_atomic(path, json.dumps({"model_key": self.model_key}, indent=1).encode())

    def _read_index(self) -> None:
        assert self.directory is not None
        path = self.directory / "index.tsv"
        if not path.exists():
            return
        exists: dict[str, bool] = {}
        for line in path.read_text(encoding="ascii", errors="replace").splitlines():
            match = _LINE.match(line)
            if match:
                name = match.group(2)
                if name not in exists:
                    exists[name] = (self.directory / name).exists()
                if exists[name]:
                    self._on_disk[match.group(1)] = name
