"""JSON-lines files and image folders, the building blocks of the file-based adapters.

* :func:`iter_jsonl` yields ``(line number, value)`` and reports a line that is not UTF-8, not
  JSON or an object naming a field twice through a callback (an adapter's :meth:`skip`) instead
  of stopping.
* :func:`require_fields` raises :class:`DatasetError` naming file, line and field when a record
  lacks a field or has it with the wrong type: a malformed file, not a bad row.
* :func:`image_index` maps file stems to image paths in a folder, listing it once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

from pigbench.adapter import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FieldType = Union[type, tuple[type, ...]]


def iter_jsonl(path: Path, on_error: Callable[[str, str], None]) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's JSON value with its 1-based line number (lines end at ``\\n``, as JSON
    Lines says); a line that is not UTF-8, not JSON or holding an object that names a field twice
    (which value holds is not defined) goes to ``on_error(reason, "file:line: ...")``."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open: {exc}") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                on_error("line not UTF-8", f"{path.name}:{lineno}: not UTF-8 "
                                           f"(byte {exc.start + 1} is 0x{raw[exc.start]:02x}: {exc.reason})")
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line, object_pairs_hook=_unique_fields)
            except json.JSONDecodeError as exc:
                on_error("unparseable JSON line", f"{path.name}:{lineno}: {exc.msg}")
            except RecursionError:
                on_error("unparseable JSON line", f"{path.name}:{lineno}: nested too deeply")
            except _RepeatedField as exc:
                on_error("JSON line repeats a field", f"{path.name}:{lineno}: field {exc.args[0]!r} given twice")


class _RepeatedField(ValueError):
    """A JSON object names a field twice (parsers keep one of the values, silently)."""


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedField(key)
        out[key] = value
    return out


def require_inside(paths: Iterable[str], where: str) -> None:
    """DatasetError naming the first image path that could leave the dataset folder (absolute, or
    with a ``..`` part): a dataset names its images relative to its own folder."""
    for rel in paths:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise DatasetError(f"{where}: image path {rel!r} must be relative to the dataset folder")


def require_fields(obj: Any, fields: Mapping[str, FieldType], where: str) -> None:
    """Check that ``obj`` is an object holding every field with the given type."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    for name, typ in fields.items():
        if name not in obj:
            raise DatasetError(f"{where}: missing field {name!r}; found fields: {', '.join(obj) or 'none'}")
        value = obj[name]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            expected = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise DatasetError(f"{where}: field {name!r} is {type(value).__name__}, expected {expected}")


def image_index(directory: Path) -> dict[str, Path]:
    """File stem -> path of every image file directly in ``directory`` (a folder named like an image
    is not one)."""
    if not directory.is_dir():
        raise DatasetError(f"image folder {str(directory)!r} does not exist or is not a folder")
    return {p.stem: p for p in sorted(directory.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
