"""Export a split's episodes (without gold labels) for a model that runs outside pigbench.

``pigbench export-episodes --dataset NAME --out DIR`` writes::

    DIR/manifest.json     the split (dataset, flags, seed, reference size, fingerprint, counts) and
                          the exact ``pigbench score`` command that scores predictions on it
    DIR/episodes.jsonl    one episode per line, in split order
    DIR/images/<hash>.<ext>   every distinct image once, named by its content hash

Exporting into the folder of an earlier export replaces its manifest and episodes and removes the
images it wrote (files named ``<hash>.<ext>`` under ``images/``, ``<hash>`` 64 hex digits: the SHA-256
content hash :class:`ImageRef` promises) that the new episodes do not show; other files in DIR are
left alone, among them the images of an adapter whose ``known_hash`` is not SHA-256 hex.

An episode line (paths are relative to DIR)::

    {"sample_id": "user0003/p017/0-2", "user_id": "user0003",
     "references": [{"prompt": "...", "preferred": {"id": "...", "file": "images/9f2c....png"},
                     "rejected": {"id": "...", "file": "images/07ab....png"}}, ...],
     "target": {"prompt": "...", "image_a": {"id": "...", "file": "images/5e1d....png"},
                "image_b": {"id": "...", "file": "images/c3a0....png"}}}

An image that cannot be read (a corrupt file; a PASTA slate with a corrupt tile) is exported as
``{"id": "...", "file": null, "error": "..."}``: the outside model should answer INVALID for the
episodes that show it, as a pigbench run does. The manifest counts them (``unreadable_images``); an
export in which no image at all can be read is an error.

The gold labels never leave pigbench: ``pigbench score`` recomputes the split from the same flags
and checks its fingerprint against the one the predictions file declares. How to write and score
predictions: ``docs/saved_outputs.md``.

examples:
  pigbench export-episodes --dataset demo --out episodes/
  pigbench export-episodes --dataset pip --dataset-path ./pip --dataset-option images=./pip/images --reference-size 5 --out pip-episodes/
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import pigbench
from pigbench.adapter import DatasetError
from pigbench.protocol import Episode, ImageError, ImageRef, open_image
from pigbench.registry import RegistryError, adapters
from pigbench.run import parse_pairs
from pigbench.runner import RunConfig, load_split, writable_dir
from pigbench.splits import SplitResult

FORMAT_VERSION = 1

_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"))
_IMAGE_NAME = re.compile(r"[0-9a-f]{64}\.(png|jpg|gif|bmp|webp|bin)(\.tmp)?")  # a file _write_image writes


def add_split_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that define a split; export-episodes and score must be given the same ones."""
    p.add_argument("--dataset", required=True, help="dataset name (see `pigbench list`)")
    p.add_argument("--dataset-path", help="local copy of the dataset")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE", help="adapter option (repeatable)")
    p.add_argument("--reference-size", type=int, help="reference pairs per user (default: the dataset's)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--limit", type=int, help="only the first N targets of the split")


def split_config(args: argparse.Namespace, **extra: Any) -> RunConfig:
    return RunConfig(dataset=args.dataset, dataset_path=args.dataset_path,
                     dataset_options=parse_pairs(args.dataset_option, "--dataset-option"),
                     reference_size=args.reference_size, seed=args.seed, limit=args.limit, **extra)


def split_flags(config: RunConfig) -> list[str]:
    """The command-line flags that recreate ``config``'s split, from any working directory (a local
    ``--dataset-path``, and a value of an adapter's ``path_options`` that names an existing file or
    folder, made absolute)."""
    flags = ["--dataset", config.dataset]
    if config.dataset_path:
        flags += ["--dataset-path", _absolute(config.dataset_path)]
    path_options = adapters.get(config.dataset).path_options
    for key, value in sorted(config.dataset_options.items()):
        flags += ["--dataset-option", f"{key}={_absolute(value) if key in path_options else value}"]
    if config.reference_size is not None:
        flags += ["--reference-size", str(config.reference_size)]
    flags += ["--seed", str(config.seed)]
    if config.limit is not None:
        flags += ["--limit", str(config.limit)]
    return flags


def _absolute(value: str) -> str:
    """``value`` as an absolute path when it names an existing file or folder, else unchanged (a hub
    id, a missing path; 'none', the options' word for no folder, even where a folder has that name)."""
    path = Path(value).expanduser()
    return str(path.resolve()) if value not in ("", "none") and path.exists() else value


def export_episodes(config: RunConfig, out: Path,
                    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """Write the split of ``config`` into ``out`` (see the module docstring); returns the manifest.
    Images an earlier export into ``out`` wrote that this one does not show are removed (their count
    reported to ``log``)."""
    _, split = load_split(config)
    writable_dir(out / "images", "export directory (--out)")
    written: dict[str, str] = {}  # content hash -> relative file path
    unreadable: dict[str, str] = {}  # image id -> why it cannot be read
    tmp = out / "episodes.jsonl.tmp"  # lines go to disk as made: the whole file in memory took 3x its size
    try:
        with tmp.open("w", encoding="utf-8") as lines:
            for e in split.episodes:
                lines.write(json.dumps(_episode_json(e, out, written, unreadable), ensure_ascii=False) + "\n")
        if unreadable and not written:
            raise ImageError(f"no image of the split can be read, e.g. {next(iter(unreadable.values()))}")
        tmp.replace(out / "episodes.jsonl")
    finally:
        tmp.unlink(missing_ok=True)
    _remove_stale_images(out, set(written.values()), log)
    manifest = _manifest(config, split, len(written), len(unreadable))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _episode_json(episode: Episode, out: Path, written: dict[str, str], unreadable: dict[str, str]) -> dict[str, Any]:
    def image(ref: ImageRef) -> dict[str, Optional[str]]:
        if ref.id not in unreadable:
            try:
                return {"id": ref.id, "file": _write_image(ref, out, written)}
            except ImageError as exc:
                unreadable[ref.id] = str(exc)
        return {"id": ref.id, "file": None, "error": unreadable[ref.id]}

    t = episode.target
    return {
        "sample_id": episode.sample_id,
        "user_id": episode.user_id,
        "references": [{"prompt": r.prompt, "preferred": image(r.preferred), "rejected": image(r.rejected)}
                       for r in episode.references],
        "target": {"prompt": t.prompt, "image_a": image(t.image_a), "image_b": image(t.image_b)},
    }


def _write_image(ref: ImageRef, out: Path, written: dict[str, str]) -> str:
    """The image's file under ``images/``, written on first sight of its content hash (its bytes
    read once). Raises :class:`ImageError` for an image that cannot be read or decoded."""
    data = None if ref.known_hash is not None else ref.read_bytes()
    if data is not None:
        ref.remember_hash(hashlib.sha256(data).hexdigest())  # content_hash, without reading again
    key = ref.content_hash
    if key not in written:
        data = ref.read_bytes() if data is None else data
        try:  # a file that does not decode (truncated, empty, not an image) is unreadable, as in a run
            with open_image(io.BytesIO(data)) as img:
                img.load()
                img.convert("RGB")
        except Exception:
            ref.open()  # raises the ImageError naming the image and its file, as a run does
        ext = next((e for magic, e in _MAGIC if data.startswith(magic)), None)
        if ext is None:
            ext = "webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else "bin"
        rel = f"images/{key}.{ext}"
        path = out / rel
        if not path.exists():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        written[key] = rel
    return written[key]


def _remove_stale_images(out: Path, kept: set[str], log: Callable[[str], None]) -> None:
    """Delete the files under ``out/images`` named as :func:`_write_image` names them that are not in
    ``kept`` (an earlier export's images, or a temporary file an interrupted one left)."""
    stale = [p for p in (out / "images").iterdir()
             if p.is_file() and _IMAGE_NAME.fullmatch(p.name) and f"images/{p.name}" not in kept]
    for path in stale:
        path.unlink()
    if stale:
        log(f"removed {len(stale)} images of an earlier export into {out} that this export does not show")


def _manifest(config: RunConfig, split: SplitResult, images: int, unreadable: int) -> dict[str, Any]:
    summary = split.summary()
    flags = split_flags(config)
    return {
        "format": "pigbench-episodes",
        "format_version": FORMAT_VERSION,
        "pigbench_version": pigbench.__version__,
        "dataset": config.dataset,
        "split_flags": flags,
        "seed": split.seed,
        "reference_size": summary["reference_size"],
        "fingerprint": split.fingerprint,
        "episodes": len(split.episodes),
        "users": split.users,
        "images": images,
        "unreadable_images": unreadable,
        "targets_before_limit": summary["targets_before_limit"],
        "predictions_header": {"fingerprint": split.fingerprint},
        "score_command": shlex.join(["pigbench", "score", *flags, "--predictions", "PREDICTIONS.jsonl", "--name", "NAME"]),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_split_arguments(p)
    p.add_argument("--out", "--output", type=Path, required=True, help="directory to write (created if missing)")


def main(args: argparse.Namespace) -> int:
    try:
        manifest = export_episodes(split_config(args), args.out)
    except (DatasetError, RegistryError, ImageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest['episodes']} episodes of {manifest['users']} users and {manifest['images']} images "
          f"to {args.out} (split fingerprint {manifest['fingerprint']})")
    if manifest["unreadable_images"]:
        print(f"{manifest['unreadable_images']} images could not be read: their entries have \"file\": null and an "
              "\"error\"; answer INVALID for the episodes that show them")
    print(f"score predictions with:\n  {manifest['score_command']}")
    return 0


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("export-episodes"))
