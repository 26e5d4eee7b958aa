"""The build workspace: one directory that every ``pigbench build`` stage reads and extends.

Layout (JSON-lines files are append-only, except ``prompts.jsonl``, written whole in one atomic write: a
stage resumes by skipping the keys already written, so a killed stage loses at most the item in progress)::

    <workdir>/
      build.json              the configuration each stage ran with (checked on resume)
      prompts.jsonl           selected prompts: set_id, base_prompt, category, challenge, note, source
      variants.jsonl          four expanded prompts per set, with the expander's provenance
      expand_failures.jsonl   sets whose expansion stayed invalid after its retries, with the replies
      renders.jsonl           one line per image: set_id, index, prompt, path, seed, model, scheduler, ...
      images/<set_id>/<index>.png
      review.jsonl            curator decisions; the last decision per set wins
      annotate.sqlite         annotators, assignments and rankings (see pigbench.build.annotate.store)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from pigbench import atomic_file
from pigbench.adapter import DatasetError

PathLike = Union[str, Path]


class BuildError(RuntimeError):
    """A build stage cannot go on; the message says what is missing and which stage makes it."""


def require_at_least_one(*flags: tuple[str, Optional[int]]) -> None:
    """A :class:`BuildError` naming the first ``(flag, value)`` whose value is below 1 (None: not
    given), raised before a stage does any work (a negative --limit would slice its jobs)."""
    for flag, value in flags:
        if value is not None and value < 1:
            raise BuildError(f"{flag} must be at least 1, got {value}")


@dataclass(frozen=True)
class Workspace:
    """Paths of one build workspace. Creating the object creates nothing on disk."""

    root: Path

    @classmethod
    def at(cls, path: PathLike) -> "Workspace":
        """The workspace at ``path``; a :class:`BuildError` naming ``--workdir`` when it is a file."""
        root = Path(path).resolve()
        if root.exists() and not root.is_dir():
            raise BuildError(f"--workdir {root} is a file; a build workspace directory is expected")
        return cls(root)

    @property
    def config_file(self) -> Path:
        return self.root / "build.json"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.jsonl"

    @property
    def variants(self) -> Path:
        return self.root / "variants.jsonl"

    @property
    def expand_failures(self) -> Path:
        return self.root / "expand_failures.jsonl"

    @property
    def renders(self) -> Path:
        return self.root / "renders.jsonl"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def review(self) -> Path:
        return self.root / "review.jsonl"

    @property
    def annotate_db(self) -> Path:
        return self.root / "annotate.sqlite"

    def require(self, path: Path, stage: str) -> Path:
        """``path`` if it exists, else a :class:`BuildError` naming the stage that writes it."""
        if not path.exists():
            raise BuildError(f"{path} does not exist: run `pigbench build {stage} --workdir {self.root}` first")
        return path

    def stage_config(self, stage: str) -> dict[str, Any] | None:
        """The configuration ``stage`` last ran with, or None."""
        if not self.config_file.exists():
            return None
        return json.loads(self.config_file.read_text(encoding="utf-8")).get(stage)

    def save_stage_config(self, stage: str, config: Mapping[str, Any]) -> None:
        """Record ``stage``'s configuration (atomic replace of ``build.json``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        data = json.loads(self.config_file.read_text(encoding="utf-8")) if self.config_file.exists() else {}
        data[stage] = dict(config)
        write_atomic(self.config_file, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))


PROMPT_FIELDS = ("set_id", "base_prompt", "category", "challenge")
"""The fields of a ``prompts.jsonl`` record that later stages read."""
VARIANT_FIELDS = ("set_id", "variants", "expander")
"""The fields of a ``variants.jsonl`` record that later stages read."""
RENDER_FIELDS = ("set_id", "index", "path", "seed", "sha256", "model")
"""The fields of a ``renders.jsonl`` record that later stages read."""
REVIEW_FIELDS = ("set_id", "decision", "reason")
"""The fields of a ``review.jsonl`` record that later stages read."""


def read_jsonl(path: PathLike, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every object in a JSON-lines file ([] if missing).

    A last line without its newline is an interrupted append and is ignored; any other
    malformed line, text that is not UTF-8, or an object without one of the ``required`` fields
    raises :class:`DatasetError` naming the file, the line and what to do.
    """
    return list(iter_jsonl(path, required))


def iter_jsonl(path: PathLike, required: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
    """The objects of :func:`read_jsonl`, one at a time."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte "
                           f"0x{data[exc.start]:02x}); repair or remove the line") from None
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the final newline is empty or an interrupted append
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc}); repair or remove the line") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object, found {type(obj).__name__}; "
                               "repair or remove the line")
        missing = [f for f in required if f not in obj]
        if missing:
            raise DatasetError(f"{path}:{number}: no {', '.join(repr(f) for f in missing)} field; "
                               "repair or remove the line")
        yield obj


def append_jsonl(path: PathLike, record: Mapping[str, Any]) -> None:
    """Append one object as a line and fsync, first dropping an interrupted last line if any."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                f.seek(0)
                keep = f.read().rfind(b"\n") + 1
                f.truncate(keep)
        f.seek(0, os.SEEK_END)
        f.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())


def file_sha256(path: PathLike) -> str:
    """The SHA-256 of a file's bytes, as ``renders.jsonl`` records it for each image."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (its folder created if needed) durably and atomically:
    :func:`pigbench.atomic_file.write_atomic` with ``fsync``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_file.write_atomic(path, data, fsync=True)


def write_jsonl(path: PathLike, rows: Sequence[Mapping[str, Any]], sort_keys: bool = False) -> None:
    """Write ``rows`` as a JSON-lines file (UTF-8, non-ASCII kept) in one :func:`write_atomic`."""
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=sort_keys) + "\n"
                               for r in rows).encode("utf-8"))
