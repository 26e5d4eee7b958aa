"""Decode each image once, embed it once, keep the result: the machinery of embedding evaluators.

An evaluator that scores from per-image features (CLIP-like rewards, reference similarity) builds
one :class:`ImageEmbedder` per model and asks it for features by :class:`~pigbench.protocol.ImageRef`::

    transform = ImageTransform(size=224, crop_offset="floor")       # what the model is fed
    images = ImageEmbedder(model.encode_image, transform, model_key="org/model@rev",
                           device=device, dtype=torch.float16, batch_size=64, num_workers=8,
                           cache_dir=None)
    images.embed(refs)        # distinct contents only; decoded in DataLoader workers, in batches
    images.get(ref)           # a CPU tensor; raises ImageError (naming the image) if it failed
    texts = TextEmbedder(encode_texts, batch_size=64)    # the same for prompts, by string

Contracts:

* Images are identified by content hash: an image that appears in many pairs and in references is
  decoded and encoded once per model (``encoded_images`` counts what reached the encoder).
* Features are cached in memory, and on disk when ``cache_dir`` is given, under a key made of the
  model key (model id plus revision or file hash), the preprocessing, the dtype and the image hash.
* Workers decode (and, unless the device does it, resize) to uint8, or float for tensor
  resampling; normalization and the cast to ``dtype`` happen on the device. A failing image
  never stops the others: its error is kept and raised by :meth:`ImageEmbedder.get` for it only.
* Heavy imports (torch, torchvision) happen when this module is imported: import it lazily.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import multiprocessing
import os
import threading
import time
import weakref
from collections import deque
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from pigbench.embedding_cache import EmbeddingCache
from pigbench.protocol import ImageError, ImageRef

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, device: Union[str, torch.device]) -> torch.dtype:
    """``auto`` is float16 on CUDA and float32 elsewhere; otherwise one of :data:`DTYPES`."""
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, in float32."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True)


@functools.lru_cache(maxsize=16)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as float32 (1, 3, 1, 1) tensors kept on ``device``: copied there once, since a
    copy from the CPU per batch would make the host wait for the batches still encoding."""
    return tuple(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1).to(device) for v in (mean, std))  # type: ignore[return-value]


@dataclass(frozen=True)
class ImageTransform:
    """Geometry and normalization of a model's input; each published recipe is one setting.

    ``shortest-crop``: resize the short side to ``resize_to`` (default ``size``), keeping the aspect
    ratio (long side ``int(short * long / short_in)``, as torchvision and HF processors do), then
    center crop ``size``. The crop offset is ``round((n - size) / 2)`` for torchvision's
    CenterCrop (OpenAI CLIP, BLIP) and ``(n - size) // 2`` for HF image processors.
    ``longest-pad``: resize the long side to ``size`` (short side rounded), then pad with zeros
    to a centered square (HPSv2's validation transform).
    ``resampling``: ``pil`` resizes the 8-bit RGB image with PIL bicubic; ``tensor`` converts to
    float in [0, 1] first and resizes with torchvision bicubic (HPSv2 converts before resizing).
    """

    size: int = 224
    mode: Literal["shortest-crop", "longest-pad"] = "shortest-crop"
    resize_to: Optional[int] = None
    crop_offset: Literal["round", "floor"] = "round"
    resampling: Literal["pil", "tensor"] = "pil"
    antialias: bool = True
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """A CHW tensor of side ``size``: uint8 for ``pil`` resampling, float32 for ``tensor``."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        w, h = image.size
        new_h, new_w = self._resized_shape(h, w)
        if self.resampling == "pil":
            if (new_h, new_w) != (h, w):
                image = image.resize((new_w, new_h), Image.BICUBIC)
            x = self.decode(image)
        else:
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms.functional import resize

            x = self.decode(image).float().div(255)
            if (new_h, new_w) != (h, w):
                x = resize(x, [new_h, new_w], InterpolationMode.BICUBIC, antialias=self.antialias)
        return self._crop_or_pad(x).contiguous()

    @staticmethod
    def rgb_array(image: Image.Image) -> np.ndarray:
        """The RGB image as a read-only uint8 HWC array at its own size."""
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))

    @staticmethod
    def decode(image: Image.Image) -> torch.Tensor:
        """The RGB image as a uint8 CHW tensor at its own size."""
        return torch.from_numpy(ImageTransform.rgb_array(image).copy()).permute(2, 0, 1)

    def resize_crop(self, batch: torch.Tensor) -> torch.Tensor:
        """``__call__`` for decoded uint8 images (N, 3, H, W) of one size, on their device.

        Only for ``pil`` resampling: :func:`pigbench.pil_resize.resize_bicubic_uint8` reproduces
        PIL's bicubic resize bit for bit, so the result equals the per-image PIL path. A center
        crop is resized alone (the whole resized image of an extreme aspect ratio can be huge).
        """
        from pigbench.pil_resize import resize_bicubic_uint8

        if self.resampling != "pil":
            raise ValueError("resize_crop reproduces PIL resampling only")
        h, w = batch.shape[-2:]
        new_h, new_w = self._resized_shape(h, w)
        if (new_h, new_w) == (h, w):
            return self._crop_or_pad(batch.contiguous())
        if self.mode == "longest-pad":
            return self._crop_or_pad(resize_bicubic_uint8(batch, new_h, new_w))  # any strides in (HWC views too), contiguous out
        top, left = self._crop_offsets(new_h, new_w)
        return resize_bicubic_uint8(batch, new_h, new_w, (top, left, self.size, self.size))

    def _resized_shape(self, h: int, w: int) -> tuple[int, int]:
        if self.mode == "longest-pad":
            scale = self.size / float(max(h, w))
            return round(h * scale), round(w * scale)
        short_target = self.resize_to or self.size
        if h <= w:
            return short_target, int(short_target * w / h)
        return int(short_target * h / w), short_target

    def _crop_or_pad(self, x: torch.Tensor) -> torch.Tensor:
        """Center crop or zero-pad the last two axes to ``size``."""
        h, w = x.shape[-2:]
        s = self.size
        if self.mode == "longest-pad":
            pad_h, pad_w = s - h, s - w
            out = torch.zeros((*x.shape[:-2], s, s), dtype=x.dtype, device=x.device)
            out[..., pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w] = x
            return out
        top, left = self._crop_offsets(h, w)
        return x[..., top : top + s, left : left + s]

    def _crop_offsets(self, h: int, w: int) -> tuple[int, int]:
        """(top, left) of the ``size`` square center-cropped from an image of h x w."""
        s = self.size
        if self.crop_offset == "round":
            return int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return (h - s) // 2, (w - s) // 2

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(x / 255 for uint8 - mean) / std, computed in float32 on the batch's device, then cast."""
        x = batch.float()
        if batch.dtype == torch.uint8:
            x = x / 255.0
        mean, std = _channel_stats(tuple(self.mean), tuple(self.std), x.device)
        return ((x - mean) / std).to(dtype)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


HASH_THREADS = 8  # threads reading and hashing image contents (both release the GIL)
HASH_PROCESSES = 4  # processes hashing image files, with decode workers: hashing threads slowed the thread feeding the device tenfold (GIL)
HASH_CHUNK = 16  # images per hashing task: one task per image made the submitting thread fight 8 busy threads for the GIL
DECODE_CHUNK = 16  # images per worker task: small, so workers share the load evenly
FIRST_CHUNKS = (2, 4, 8)  # a call's first tasks, one of each size per worker: images come back within milliseconds
PREFETCH = 2  # tasks queued per worker


class _Decode(torch.utils.data.Dataset):
    """Decodes the task it is given, ``(position, ImageRef)``, to ``(position, image | None, error | None)``:
    the transformed image (a CHW tensor), or with ``full_resolution`` the decoded image as an HWC
    uint8 array, left for the device to resize (an HWC array needs no transposing copy here).

    It holds no data: tasks come from :class:`_TaskChunks`, so persistent workers serve every call.
    """

    def __init__(self, transform: ImageTransform, full_resolution: bool) -> None:
        self.transform = transform
        self.full_resolution = full_resolution

    def __getitem__(self, task: tuple[int, ImageRef]):
        i, ref = task
        try:
            image = ref.open()
            if self.full_resolution:
                return i, self.transform.rgb_array(image), None
            return i, self.transform(image), None
        except Exception as exc:  # a corrupt or unreadable image fails alone
            return i, None, str(exc) if isinstance(exc, ImageError) else f"image {ref.id!r}: {exc}"


def _unread_paths(refs: Sequence[ImageRef]) -> Optional[list[Optional[Union[str, Path]]]]:
    """For a chunk of refs that are all files: each path whose content hash is still unknown, None
    where it is known; None if a ref is not a file (bytes or a loader)."""
    if not all(isinstance(r.source, (str, Path)) for r in refs):
        return None
    return [r.source if r.known_hash is None else None for r in refs]


def _hash_files(paths: list[Optional[Union[str, Path]]]) -> list[Optional[str]]:
    """In a hashing process: :attr:`ImageRef.content_hash` of each file; None for a path given as
    None, or for a file that cannot be read (the caller reads it again to raise the error)."""
    digests: list[Optional[str]] = []
    for path in paths:
        try:
            digests.append(None if path is None else ImageRef(str(path), path).content_hash)
        except ImageError:
            digests.append(None)
    return digests


def _exit_with_parent(parent: int) -> None:
    """Starts a hashing process: a thread ends it once ``parent`` is gone (a killed parent would
    otherwise leave its pool's processes waiting for work forever)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


class _TaskChunks(torch.utils.data.Sampler):
    """The tasks of the current :meth:`ImageEmbedder.embed` call (set before each pass), as lists of
    tasks for the workers (a batch sampler): first one chunk of each :data:`FIRST_CHUNKS` size per
    worker, so every worker returns images soon after a call starts, then :data:`DECODE_CHUNK`.
    The tasks may be a generator that produces them as contents are hashed (no length)."""

    def __init__(self, workers: int) -> None:
        self.tasks: Iterable[tuple[int, ImageRef]] = []
        self.workers = max(1, workers)

    def __iter__(self):
        tasks = iter(self.tasks)
        sizes = itertools.chain(*(itertools.repeat(n, self.workers) for n in FIRST_CHUNKS), itertools.repeat(DECODE_CHUNK))
        for size in sizes:
            chunk = list(itertools.islice(tasks, size))
            if not chunk:
                return
            yield chunk


class _FailingLoader:
    """A picklable image loader that raises the error met while reading the image."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __call__(self) -> bytes:
        raise ImageError(self.message)


def _collate(items):
    """(groups, errors): decoded images stacked per shape as (positions, tensor); failures as (position, message).

    In a worker process each stack is written straight into shared memory, which is how it travels
    to the main process (a tensor in ordinary memory would be copied there once more)."""
    by_shape: dict[tuple[int, ...], list[tuple[int, Union[torch.Tensor, np.ndarray]]]] = {}
    for i, t, _ in items:
        if t is not None:
            by_shape.setdefault(tuple(t.shape), []).append((i, t))
    groups = [([i for i, _ in group], _stack([t for _, t in group])) for group in by_shape.values()]
    return groups, [(i, e) for i, t, e in items if t is None]


def _stack(images: list) -> torch.Tensor:
    """Images of one shape and dtype (tensors or arrays) stacked along a new first axis, in shared
    memory when called in a DataLoader worker."""
    arrays = [x.numpy() if isinstance(x, torch.Tensor) else x for x in images]
    shape = (len(arrays), *arrays[0].shape)
    dtype = torch.from_numpy(np.empty(0, arrays[0].dtype)).dtype
    if torch.utils.data.get_worker_info() is None:
        out = torch.empty(shape, dtype=dtype)
    else:
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
        out = torch.empty(0, dtype=dtype).set_(storage).view(shape)
    np.stack(arrays, out=out.numpy())
    return out


class ImageEmbedder:
    """Embeds distinct images (by content hash) in batches and keeps their features.

    ``encode`` maps a normalized batch on ``device`` (already cast to ``dtype``) to one feature
    tensor per image (any trailing shape). Features are stored on the CPU in ``dtype``.
    With ``num_workers`` > 0, worker processes (forked once, on first use, where the platform
    can fork) decode chunks of :data:`DECODE_CHUNK` images, taken in the order they finish,
    while the device encodes batches of ``batch_size``; up to two batches are queued on the
    device ahead of the host, which never waits for the device except for the features of the
    oldest batch. On CUDA, copies and resizes run on a side stream, and when the device has
    nothing queued (the start of a call) a partial batch of whole quarters of ``batch_size`` is
    encoded rather than waited on.
    With ``resize_on_device`` (default: PIL resampling on CUDA) workers only decode and the
    device resizes with :mod:`pigbench.pil_resize`, which gives the same pixels as PIL.
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        transform: ImageTransform,
        *,
        model_key: str,
        device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 32,
        num_workers: int = 0,
        cache_dir: Optional[Union[str, Path]] = None,
        resize_on_device: Optional[bool] = None,
    ) -> None:
        self.encode = encode
        self.transform = transform
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = max(1, batch_size)
        self.num_workers = max(0, num_workers)
        self.cache = EmbeddingCache(f"{model_key}|{transform.key()}|{dtype}", cache_dir)
        self.failures: dict[str, str] = {}
        self.encoded_images = 0
        self.encoder_calls = 0
        if resize_on_device is None:
            resize_on_device = transform.resampling == "pil" and self.device.type == "cuda"
        self.resize_on_device = resize_on_device
        self._sampler = _TaskChunks(self.num_workers)
        self._loader: Optional[torch.utils.data.DataLoader] = None
        self._side_stream: Optional["torch.cuda.Stream"] = None
        self._file_hashers: Optional[ProcessPoolExecutor] = None

    def embed(self, refs: Sequence[ImageRef]) -> None:
        """Make features available for ``refs``; decodes and encodes only hashes not yet known.

        Contents are hashed ahead (files in processes, other sources in threads) while the workers
        already decode the first new images: tasks reach the workers as their hashes are known, in
        ``refs`` order. An error while hashing (an unreadable file) is raised once the images before
        it are embedded."""
        hashes: list[str] = []
        hash_error: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
            tasks = self._new_tasks(refs, hashes, hash_error, pool)
            first = next(tasks, None)
            if first is not None:
                self._sampler.tasks = itertools.chain([first], tasks)
                self._run(hashes)
        if hash_error:
            raise hash_error[0]

    def _new_tasks(self, refs: Sequence[ImageRef], hashes: list[str], hash_error: list[BaseException], pool: ThreadPoolExecutor):
        """Worker tasks ``(position, sendable ref)`` for the contents of ``refs`` not yet known (not
        cached, not failed, not already met in ``refs``), appending their hashes to ``hashes`` so
        that ``hashes[position]`` is each task's hash. Hashing runs ahead of the consumer in chunks
        of :data:`HASH_CHUNK` images (:meth:`_hash_ahead`): files in :data:`HASH_PROCESSES`
        processes where there are decode workers (:meth:`_file_hasher`), other sources in
        ``pool``'s threads (reads and SHA-256 release the GIL). Nothing runs ahead when there is
        nothing to read (every hash known and cached or failed, as in a ``predict`` after
        ``prepare``). A hashing error ends the tasks and is put in ``hash_error``."""
        seen: set[str] = set()
        reads = len(refs) >= 64 and any(
            r.known_hash is None or (r.known_hash not in self.cache and r.known_hash not in self.failures) for r in refs)
        if reads:
            chunks = [refs[i : i + HASH_CHUNK] for i in range(0, len(refs), HASH_CHUNK)]
            paths = [_unread_paths(chunk) for chunk in chunks]
            # the processes start before this call's hashing threads do: a fork copies no thread mid-work
            files = self._file_hasher() if any(p and any(p) for p in paths) else None
            results = [self._hash_ahead(chunk, unread, pool, files) for chunk, unread in zip(chunks, paths)]
            found = itertools.chain.from_iterable(result() for result in results)
        else:
            found = map(self._hash_and_send, refs)
        try:
            for h, sendable in found:
                if isinstance(sendable, BaseException):
                    raise sendable
                if h not in seen and h not in self.failures and h not in self.cache:
                    seen.add(h)
                    hashes.append(h)
                    yield len(hashes) - 1, sendable
        except Exception as exc:
            hash_error.append(exc)

    def _hash_ahead(self, refs: Sequence[ImageRef], unread: Optional[list], pool: ThreadPoolExecutor,
                    files: Optional[ProcessPoolExecutor]) -> Callable[[], list[tuple[str, Union[ImageRef, BaseException]]]]:
        """Start hashing a chunk; returns what waits for its :meth:`_hash_chunk` list. A chunk of
        files (``unread``: :func:`_unread_paths`) has its unknown hashes computed by the ``files``
        processes, leaving only the bookkeeping to the caller's thread (all of it when every hash is
        known); any other chunk, or every chunk once the processes fail, goes to ``pool``'s threads."""
        if unread is not None and not any(unread):
            return functools.partial(self._hash_chunk, refs)
        if unread is not None and files is not None:
            try:
                return functools.partial(self._hash_chunk, refs, files.submit(_hash_files, unread))
            except RuntimeError:  # a broken pool (a process died) or one shut down: the next call forks anew
                self._drop_file_hasher()
        return pool.submit(self._hash_chunk, refs).result

    def _hash_and_send(self, ref: ImageRef) -> tuple[str, ImageRef]:
        """The content hash of ``ref`` and what a worker is sent for it (:meth:`_sendable`, read
        where the hashing runs, unless the features are already cached)."""
        h = ref.content_hash
        return h, ref if h in self.cache or h in self.failures else self._sendable(ref)

    def _hash_chunk(self, refs: Sequence[ImageRef], digests: Optional[Future] = None) -> list[tuple[str, Union[ImageRef, BaseException]]]:
        """:meth:`_hash_and_send` of each ref, up to the first that raises, which ends the list as ``("", error)``.
        ``digests``: the refs' :func:`_hash_files`, computed in another process; a file it could
        not read is read here again, so that the error is ``content_hash``'s own, and if that
        process failed (killed, say) every file of the chunk is."""
        known: Iterable[Optional[str]] = itertools.repeat(None)
        failure = digests.exception() if digests is not None else None
        if digests is not None and failure is None:
            known = digests.result()
        elif isinstance(failure, BrokenExecutor):
            self._drop_file_hasher()
        out: list[tuple[str, Union[ImageRef, BaseException]]] = []
        for ref, digest in zip(refs, known):
            try:
                if digest is not None:
                    ref.remember_hash(digest)
                out.append(self._hash_and_send(ref))
            except Exception as exc:
                out.append(("", exc))
                break
        return out

    def _file_hasher(self) -> Optional[ProcessPoolExecutor]:
        """Processes that hash image files, or None: without decode workers, or where the platform
        cannot fork. They are forked together on first use and end with the embedder (or with
        this process, should it be killed)."""
        if self._file_hashers is None and self.num_workers > 0 and "fork" in multiprocessing.get_all_start_methods():
            hashers = ProcessPoolExecutor(min(HASH_PROCESSES, os.cpu_count() or 1), mp_context=multiprocessing.get_context("fork"),
                                          initializer=_exit_with_parent, initargs=(os.getpid(),))
            hashers.submit(int).result()  # a fork pool starts all its processes at its first task: now
            weakref.finalize(self, hashers.shutdown, wait=False, cancel_futures=True)
            self._file_hashers = hashers
        return self._file_hashers

    def _drop_file_hasher(self) -> None:
        """Let go of the hashing processes after one died; the next call forks new ones."""
        if self._file_hashers is not None:
            self._file_hashers.shutdown(wait=False, cancel_futures=True)
            self._file_hashers = None

    def _run(self, hashes: list[str]) -> None:
        """Decode the sampler's tasks in workers and encode them in batches on the device."""
        pending_idx: list[int] = []
        pending: list[torch.Tensor] = []
        in_flight: deque = deque()
        for groups, errors in self._decoded():
            for i, err in errors:
                self.failures[hashes[i]] = err
            for idx, batch in groups:
                pending.append(self._to_device(batch))
                pending_idx += idx
            while n := self._ready(len(pending_idx), in_flight):
                x = torch.cat(pending)
                self._launch([hashes[i] for i in pending_idx[:n]], x[:n], in_flight)
                pending_idx, pending = pending_idx[n:], [x[n:]]
        if pending_idx:
            self._launch([hashes[i] for i in pending_idx], torch.cat(pending), in_flight)
        while in_flight:
            self._store(*in_flight.popleft())

    def _ready(self, pending: int, in_flight: deque) -> int:
        """How many of the ``pending`` images to encode now: a full batch; or, on CUDA, as many whole
        quarter batches as are pending if the device has finished every queued batch (as at the
        start of a call), rather than leaving it idle until a full batch is decoded. Whole quarters
        keep the batch sizes few (kernels that plan per shape, such as cuDNN's, plan once for each)."""
        if pending >= self.batch_size:
            return self.batch_size
        last = in_flight[-1][2] if in_flight else None  # the event of the newest batch's copy
        idle = self.device.type == "cuda" and (last is None or last.query())
        quarter = max(1, self.batch_size // 4)
        return pending - pending % quarter if idle else 0

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A decoded chunk on the device, resized there when ``resize_on_device``. On CUDA the copy
        and the resize run on a side stream, so they overlap the batches queued for encoding
        instead of waiting behind them; the main stream waits for them before using the result."""
        if self.device.type != "cuda":
            return self._resize(batch.to(self.device))
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._side_stream):
            x = self._resize(batch.to(self.device, non_blocking=True))
        x.record_stream(main)  # its memory is not reused before the main stream is done with it
        main.wait_stream(self._side_stream)
        return x

    def _resize(self, batch: torch.Tensor) -> torch.Tensor:
        """With ``resize_on_device``, decoded HWC images (N, H, W, 3) resized to CHW; otherwise as is."""
        return self.transform.resize_crop(batch.permute(0, 3, 1, 2)) if self.resize_on_device else batch

    def _launch(self, hashes: list[str], batch: torch.Tensor, in_flight: deque) -> None:
        """Queue the encoding of ``batch`` and the copy of its features to the CPU; then store the
        oldest batch while more than two are queued. On CUDA the copy goes to pinned memory and
        only its own event is awaited, so the device keeps encoding the newer batches meanwhile."""
        x = self.transform.normalize(batch, self.dtype)
        with torch.inference_mode():
            feats = self.encode(x)
            done = None
            if feats.is_cuda:
                feats = feats.to("cpu", non_blocking=True)
                done = torch.cuda.Event()
                done.record()
        in_flight.append((hashes, feats, done))
        self.encoder_calls += 1
        self.encoded_images += len(hashes)
        while len(in_flight) > 2:
            self._store(*in_flight.popleft())

    def _store(self, hashes: list[str], feats: torch.Tensor, done: Optional["torch.cuda.Event"]) -> None:
        if done is not None:
            done.synchronize()
        self.cache.put_many({h: f.clone() for h, f in zip(hashes, feats.to("cpu"))})

    def get(self, ref: ImageRef) -> torch.Tensor:
        """The feature of one image, embedding it if needed; :class:`ImageError` if it failed."""
        h = ref.content_hash
        if h not in self.failures and self.cache.get(h) is None:
            self.embed([ref])
        if h in self.failures:
            raise ImageError(self.failures[h])
        return self.cache.memory[h]

    def stack(self, refs: Sequence[ImageRef]) -> torch.Tensor:
        return torch.stack([self.get(r) for r in refs])

    def _sendable(self, ref: ImageRef) -> ImageRef:
        """What a worker is sent: ``ref`` when its source is a path or bytes; otherwise (a loader,
        which may not pickle or may drag a large object along) a copy holding the encoded bytes,
        read here. An unreadable image stays a ref whose loader fails again, in the worker."""
        if self.num_workers == 0 or isinstance(ref.source, (str, Path, bytes)):
            return ref
        try:
            return ImageRef(ref.id, ref.read_bytes(), ref.known_hash)
        except Exception as exc:
            message = str(exc) if isinstance(exc, ImageError) else f"image {ref.id!r}: {exc}"
            return ImageRef(ref.id, _FailingLoader(message), ref.known_hash)

    def _decoded(self):
        decode = _Decode(self.transform, full_resolution=self.resize_on_device)
        if self.num_workers == 0:
            return (_collate([decode[t]]) for t in self._sampler.tasks)
        return self._from_workers(decode)

    def _from_workers(self, decode: _Decode):
        """The decoded chunks from the persistent workers. If the loader fails (a worker killed for
        memory, say), it is let go before the error is raised, so the next call forks new workers
        (the loader of a dead worker raises the same error on every later call)."""
        if self._loader is None:
            methods = multiprocessing.get_all_start_methods()
            self._loader = torch.utils.data.DataLoader(
                decode, batch_sampler=self._sampler,
                num_workers=self.num_workers, collate_fn=_collate, pin_memory=self.device.type == "cuda",
                persistent_workers=True, prefetch_factor=PREFETCH,
                in_order=False,  # a chunk is used as soon as it is decoded, not after those sent before it
                multiprocessing_context="fork" if "fork" in methods else None,
            )
        try:
            yield from self._loader
        except Exception:
            self._loader = None
            raise

    def stats(self) -> dict[str, int]:
        return {
            "encoded_images": self.encoded_images,
            "encoder_calls": self.encoder_calls,
            "disk_hits": self.cache.disk_hits,
            "failed_images": len(self.failures),
        }


class TextEmbedder:
    """Features of distinct strings, encoded in batches once and kept on the CPU.

    ``encode`` maps a list of strings to a tensor with one row (any trailing shape) per string.
    """

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], batch_size: int = 64) -> None:
        self.encode = encode
        self.batch_size = max(1, batch_size)
        self.memory: dict[str, torch.Tensor] = {}
        self.encoded_texts = 0

    def embed(self, texts: Sequence[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self.memory))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            with torch.inference_mode():
                feats = self.encode(chunk).to("cpu")
            self.encoded_texts += len(chunk)
            for text, f in zip(chunk, feats):
                self.memory[text] = f.clone()

    def get(self, text: str) -> torch.Tensor:
        if text not in self.memory:
            self.embed([text])
        return self.memory[text]

    def stack(self, texts: Sequence[str]) -> torch.Tensor:
        self.embed(texts)
        return torch.stack([self.memory[t] for t in texts])
