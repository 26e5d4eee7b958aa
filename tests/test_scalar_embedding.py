"""The embedding machinery: preprocessing parity, decode/encode once per content, caches, failures."""

from __future__ import annotations

import hashlib
import io
import os
import signal
from collections import deque
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("transformers")

from PIL import Image
from torchvision import transforms as T

from pigbench.embedding import ImageEmbedder, ImageTransform, TextEmbedder, resolve_dtype
from pigbench.protocol import ImageError, ImageRef
from scalar_fixtures import IMAGE_SIZES, kernel_running, run_in_triton_interpreter, write_images

pytestmark = pytest.mark.models

# OpenAI CLIP's normalization, as published (openai/CLIP clip.py), the default of ImageTransform: spelled
# out here so that a wrong constant in pigbench cannot agree with itself.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's, for a processor other than CLIP's
IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision_clip(size: int, resize: int):
    return T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(CLIP_MEAN, CLIP_STD)])


def test_shortest_crop_round_matches_torchvision_center_crop(tmp_path):
    # margins 5 and 9 (37 x 32, 32 x 41): offsets 2.5 and 4.5 round half to even (2, 4), as Python's
    # round in torchvision's CenterCrop; rounding half up would crop one pixel further
    refs = write_images(tmp_path, sizes=[*IMAGE_SIZES, (37, 32), (32, 41)])
    tf = ImageTransform(size=32, crop_offset="round")
    for ref in refs:
        ours = tf.normalize(tf(ref.open())[None], torch.float32)[0]
        assert ours.shape == (3, 32, 32)
        torch.testing.assert_close(ours, _torchvision_clip(32, 32)(ref.open()), atol=1e-5, rtol=0)


def test_shortest_crop_floor_matches_hf_image_processor(tmp_path):
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    refs = write_images(tmp_path)
    hf = BitImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                              image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    tf = ImageTransform(size=32, resize_to=36, crop_offset="floor", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for ref in refs:
        expected = torch.as_tensor(hf(ref.open(), return_tensors="pt")["pixel_values"][0])
        torch.testing.assert_close(tf.normalize(tf(ref.open())[None], torch.float32)[0], expected, atol=1e-5, rtol=0)


def test_round_and_floor_offsets_differ_on_odd_margins(tmp_path):
    (ref,) = write_images(tmp_path, sizes=[(39, 32)])  # resized to 39x32: margin 7 -> offsets 4 vs 3
    img = ref.open()
    a = ImageTransform(size=32, crop_offset="round")(img)
    b = ImageTransform(size=32, crop_offset="floor")(img)
    assert torch.equal(a[:, :, :-1], b[:, :, 1:]) and not torch.equal(a, b)


@pytest.mark.parametrize("antialias", [True, False])  # hps's antialias option
def test_longest_pad_matches_hpsv2_resize_max_size(tmp_path, antialias):
    import torchvision.transforms.functional as F

    def hpsv2_val(img: Image.Image, size: int = 32) -> torch.Tensor:  # ToTensor, ResizeMaxSize, Normalize
        x = T.ToTensor()(img.convert("RGB"))
        h, w = x.shape[1:]
        scale = size / float(max(h, w))
        nh, nw = round(h * scale), round(w * scale)
        x = F.resize(x, [nh, nw], T.InterpolationMode.BICUBIC, antialias=antialias)
        ph, pw = size - nh, size - nw
        x = F.pad(x, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
        return T.Normalize(CLIP_MEAN, CLIP_STD)(x)

    tf = ImageTransform(size=32, mode="longest-pad", resampling="tensor", antialias=antialias)
    for ref in write_images(tmp_path):
        out = tf(ref.open())
        assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
        torch.testing.assert_close(tf.normalize(out[None], torch.float32)[0], hpsv2_val(ref.open()), atol=1e-5, rtol=0)


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("fp8", "cpu")


class _MeanEncoder:
    """A stand-in image encoder: per-image channel means; counts calls and images."""

    def __init__(self) -> None:
        self.calls, self.images = 0, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += len(x)
        return x.float().mean(dim=(2, 3))


def test_each_distinct_content_is_decoded_and_encoded_once(tmp_path):
    refs = write_images(tmp_path)
    same_bytes_other_id = ImageRef("copy-of-img0", refs[0].read_bytes())
    enc = _MeanEncoder()
    emb = ImageEmbedder(enc, ImageTransform(size=32), model_key="mean", batch_size=3)
    emb.embed(refs + refs[:4] + [same_bytes_other_id])
    emb.embed(refs[2:])  # all known: no work
    assert (enc.images, emb.encoded_images, enc.calls) == (len(refs), len(refs), 3)
    torch.testing.assert_close(emb.get(same_bytes_other_id), emb.get(refs[0]))


def test_persistent_workers_serve_several_calls_with_the_same_features(tmp_path):
    refs = write_images(tmp_path)
    extra = write_images(tmp_path / "extra", sizes=[(60, 40)], seed=5)[0]
    as_lambda = ImageRef("closure", lambda data=extra.read_bytes(): data)  # cannot be pickled to a worker
    serial = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=3)
    parallel = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=3, num_workers=2)
    serial.embed(refs)
    parallel.embed(refs[:3])
    parallel.embed(refs + [as_lambda])  # the same worker processes decode the second call
    assert parallel.encoded_images == len(refs) + 1 and parallel.encoder_calls == 1 + 2
    for ref in refs + [extra]:
        assert torch.equal(serial.get(ref), parallel.get(as_lambda if ref is extra else ref))


@pytest.mark.parametrize("workers", [0, 2])
def test_hashing_while_decoding_keeps_dedup_and_raises_an_unreadable_file_after_the_rest(tmp_path, workers):
    refs = write_images(tmp_path)
    many = [ImageRef(f"{r.id}-{k}", r.source) for k in range(12) for r in refs]  # >= 64: hashed ahead (processes with workers)
    missing = ImageRef("missing", tmp_path / "nope.png")
    serial = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=3)
    serial.embed(refs)
    emb = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=3, num_workers=workers)
    with pytest.raises(ImageError, match="nope.png"):
        emb.embed(many[:40] + [missing] + many[40:])
    assert emb.encoded_images == len({r.content_hash for r in many[:40]})  # those before it are embedded
    emb.embed(many)  # the embedder (and its workers) still serve calls
    assert emb.encoded_images == len(refs)
    assert (emb._file_hashers is not None) == (workers > 0)
    assert all(r.known_hash == hashlib.sha256(Path(r.source).read_bytes()).hexdigest() for r in many)  # kept on the refs
    for r in many:
        assert torch.equal(emb.get(r), serial.get(refs[int(r.id.split("-")[0].removeprefix("img"))]))


def test_on_an_idle_device_whole_quarter_batches_start_and_full_batches_follow():
    emb = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", device="cuda", batch_size=256)
    idle = deque()  # nothing queued on the device (no CUDA needed to ask)
    assert [emb._ready(n, idle) for n in (63, 64, 150, 255, 256, 300)] == [0, 64, 128, 192, 256, 256]


def test_a_killed_hashing_process_costs_no_call(tmp_path):
    refs = write_images(tmp_path)
    emb = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=3, num_workers=1)

    def fresh():  # new refs (no known hash) of the same files: >= 64, so hashed ahead, in the processes
        return [ImageRef(f"{r.id}-{k}", r.source) for k in range(12) for r in refs]

    emb.embed(fresh())
    first = emb._file_hashers
    os.kill(next(iter(first._processes)), signal.SIGKILL)
    for _ in range(2):
        again = fresh()
        emb.embed(again)  # a broken pool is dropped: its chunks are hashed here or in threads
        assert all(r.known_hash == hashlib.sha256(Path(r.source).read_bytes()).hexdigest() for r in again)
    assert emb.encoded_images == len(refs)
    died = Future()
    died.set_exception(BrokenProcessPool("a hashing process was killed"))
    assert [h for h, _ in emb._hash_chunk(refs[:2], died)] == [r.content_hash for r in refs[:2]]
    assert emb._file_hashers is None  # dropped: the next call forks new processes
    assert emb._file_hasher() not in (None, first)


def test_a_killed_decode_worker_costs_only_the_call_it_was_in(tmp_path, monkeypatch):
    import pigbench.embedding as embedding

    refs = write_images(tmp_path / "a")
    others = write_images(tmp_path / "b", seed=7)
    killer = str(refs[3].source)
    decode = embedding._Decode.__getitem__

    def dies_on_killer(self, task):  # as a worker killed for memory while decoding a huge image
        if str(task[1].source) == killer and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return decode(self, task)

    monkeypatch.setattr(embedding._Decode, "__getitem__", dies_on_killer)  # before the workers fork
    emb = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=2, num_workers=2)
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        emb.embed(refs)
    emb.embed(others)  # new workers decode the next call
    serial = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=2)
    for r in others:
        assert torch.equal(emb.get(r), serial.get(r))


def test_disk_cache_is_reused_across_instances_and_keyed_by_model(tmp_path):
    refs = write_images(tmp_path / "img")
    first = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m@rev1", cache_dir=tmp_path / "cache")
    first.embed(refs)
    enc = _MeanEncoder()
    second = ImageEmbedder(enc, ImageTransform(size=32), model_key="m@rev1", cache_dir=tmp_path / "cache")
    second.embed(refs)
    assert enc.images == 0
    second.stack(refs)
    assert second.cache.disk_hits == len(refs)  # read lazily, with the rest of their batch's file
    torch.testing.assert_close(second.get(refs[3]), first.get(refs[3]))
    other = ImageEmbedder(enc, ImageTransform(size=32), model_key="m@rev2", cache_dir=tmp_path / "cache")
    other.embed(refs)
    assert enc.images == len(refs)  # another revision is another key


def test_disk_cache_is_keyed_by_preprocessing_and_dtype(tmp_path):
    refs = write_images(tmp_path / "img")

    def encode(x):  # features in the embedder's dtype
        return x.mean(dim=(2, 3))

    def embedder(transform, dtype, cache):
        return ImageEmbedder(encode, transform, model_key="m@rev1", dtype=dtype, cache_dir=cache)

    ImageEmbedder(encode, ImageTransform(size=32), model_key="m@rev1", cache_dir=tmp_path / "cache").embed(refs)
    for transform, dtype in [(ImageTransform(size=32, resize_to=36), torch.float32), (ImageTransform(size=32), torch.bfloat16)]:
        cached, fresh = embedder(transform, dtype, tmp_path / "cache"), embedder(transform, dtype, None)
        assert torch.equal(cached.stack(refs), fresh.stack(refs))
        assert cached.encoded_images == len(refs) and cached.cache.disk_hits == 0 and cached.get(refs[0]).dtype == dtype


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_or_unreadable_image_fails_alone_and_names_itself(tmp_path, workers):
    refs = write_images(tmp_path, sizes=[(40, 40), (41, 40)])
    bad = ImageRef("broken", b"not an image at all")

    def lost() -> bytes:
        raise KeyError("row 17 is gone")

    unreadable = ImageRef("lost-row", lost, known_hash="h-lost")
    emb = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=4, num_workers=workers)
    emb.embed([refs[0], bad, unreadable, refs[1]])
    assert emb.get(refs[1]).shape == (3,)
    with pytest.raises(ImageError, match="broken"):
        emb.get(bad)
    with pytest.raises(ImageError, match="lost-row.*row 17 is gone"):
        emb.get(unreadable)
    assert emb.stats()["failed_images"] == 2


def test_a_loader_image_in_a_mode_png_cannot_store_embeds_alike_with_and_without_workers(tmp_path):
    (ref,) = write_images(tmp_path, sizes=[(45, 37)])
    rgb = ref.open()
    refs = [ImageRef(mode, lambda m=mode: rgb.convert(m)) for mode in ("CMYK", "YCbCr", "F")]  # no known hash: read to hash
    assert all(Image.open(io.BytesIO(r.read_bytes())).mode == "RGB" for r in refs)
    serial = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=3)
    parallel = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=3, num_workers=2)
    serial.embed(refs)
    parallel.embed(refs)  # each is sent to a worker as its encoded bytes
    assert parallel.stats()["failed_images"] == 0
    for r in refs:
        assert torch.equal(parallel.get(r), serial.get(r))


def test_text_embedder_encodes_each_string_once():
    seen = []

    def encode(texts):
        seen.extend(texts)
        return torch.tensor([[float(len(t))] for t in texts])

    te = TextEmbedder(encode, batch_size=2)
    out = te.stack(["ab", "abc", "ab", "x"])
    assert out[:, 0].tolist() == [2.0, 3.0, 2.0, 1.0]
    te.embed(["x", "abc"])
    assert seen == ["ab", "abc", "x"]


@pytest.mark.parametrize("size, out", [((512, 512), (224, 224)), ((640, 480), (298, 224)), ((37, 45), (32, 38)),
                                       ((33, 71), (32, 68)), ((71, 33), (68, 32)), ((100, 60), (373, 224)),
                                       ((60, 50), (50, 40)), ((147, 134), (61, 13)), ((30, 88), (12, 22))])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])  # float64 products; the Triton kernel
def test_tensor_bicubic_resize_is_bit_exact_with_pil(size, out, device):
    import numpy as np
    from PIL import Image

    from pigbench.pil_resize import KERNEL, resize_bicubic_uint8

    (w, h), (ow, oh) = size, out
    arr = np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(arr).resize((ow, oh), Image.BICUBIC))
    x = torch.from_numpy(arr).to(device)[None].permute(0, 3, 1, 2)  # an HWC batch seen as CHW, as decoded
    for batch in (x, x.contiguous()):
        got = resize_bicubic_uint8(batch, oh, ow)[0].permute(1, 2, 0)
        assert np.array_equal(got.cpu().numpy(), expected)
    assert KERNEL.failure is None


RESIZE_KERNEL_CASES = [((23, 19), (20, 16)), ((17, 37), (16, 35)), ((30, 25), (25, 20)), ((15, 44), (6, 11)),
                       ((12, 9), (40, 20)), ((40, 30), (40, 17)), ((40, 30), (23, 30))]  # (w, h): both orders, up, one axis


def test_resize_kernel_in_the_interpreter_is_bit_exact_with_pil():
    """The Triton resize on the CPU in Triton's interpreter (a child process: TRITON_INTERPRET must be
    set before Triton is imported), on HWC views as the decode workers hand them over, and on CHW."""
    pytest.importorskip("triton")
    run_in_triton_interpreter(f"""
        import numpy as np, torch
        from PIL import Image
        from pigbench.pil_resize import KERNEL, resize_bicubic_uint8
        for (w, h), (ow, oh) in {RESIZE_KERNEL_CASES!r}:
            arr = np.random.default_rng(w * h).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
            want = np.stack([np.asarray(Image.fromarray(a).resize((ow, oh), Image.BICUBIC)) for a in arr])
            hwc = torch.from_numpy(arr).permute(0, 3, 1, 2)
            for x in (hwc, hwc.contiguous()):
                assert KERNEL.usable(x)
                got = resize_bicubic_uint8(x, oh, ow)
                assert got.is_contiguous() and np.array_equal(got.permute(0, 2, 3, 1).numpy(), want), (w, h, ow, oh)
        assert KERNEL.failure is None
        print("ok")
    """, timeout=600)


def test_a_failing_resize_kernel_warns_once_and_float64_products_take_over(monkeypatch):
    import numpy as np

    from pigbench import pil_resize

    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("no Triton backend\ndetail")

    kernel_running(monkeypatch, pil_resize.KERNEL, broken)
    arr = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(arr).resize((17, 20), Image.BICUBIC))
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    with pytest.warns(RuntimeWarning, match=r"bicubic resize kernel failed \(RuntimeError: no Triton backend\); using float64"):
        got = pil_resize.resize_bicubic_uint8(x, 20, 17)
    assert np.array_equal(got[0].permute(1, 2, 0).numpy(), want)
    assert np.array_equal(pil_resize.resize_bicubic_uint8(x, 20, 17)[0].permute(1, 2, 0).numpy(), want)
    assert len(calls) == 1  # not tried again


@pytest.mark.parametrize("workers", [0, 2])
def test_resizing_on_the_device_gives_the_same_features(tmp_path, workers):
    refs = write_images(tmp_path)  # eight sizes: each decode chunk holds several shape groups
    tf = ImageTransform(size=32, resize_to=36, crop_offset="floor")
    on_cpu = ImageEmbedder(_MeanEncoder(), tf, model_key="m", batch_size=3, resize_on_device=False)
    on_device = ImageEmbedder(_MeanEncoder(), tf, model_key="m", batch_size=3, num_workers=workers, resize_on_device=True)
    on_cpu.embed(refs)
    on_device.embed(refs)
    for ref in refs:
        assert torch.equal(on_cpu.get(ref), on_device.get(ref))
    assert on_device.encoder_calls == 3


def test_an_extreme_aspect_ratio_resized_on_the_device_computes_only_the_crop(tmp_path, monkeypatch):
    """A 1 x 4000 image at short side 224 is 224 x 896000 before the center crop: the device path
    built the weights of all 896000 columns (28 GB) and failed the whole call. Only the crop's are
    computed now, with PIL's pixels."""
    from pigbench import pil_resize

    rows = []
    real = pil_resize.bicubic_weights.__wrapped__
    monkeypatch.setattr(pil_resize, "bicubic_weights", lambda *a: rows.append(real(*a).shape[0]) or real(*a))
    pil_resize._weights_on.cache_clear()
    refs = write_images(tmp_path, sizes=[(600, 2), (2, 600), (37, 45)])
    tf = ImageTransform(size=16, crop_offset="floor")
    on_cpu = ImageEmbedder(_MeanEncoder(), tf, model_key="m", batch_size=3, resize_on_device=False)
    on_device = ImageEmbedder(_MeanEncoder(), tf, model_key="m", batch_size=3, resize_on_device=True)
    on_cpu.embed(refs)
    on_device.embed(refs)
    for ref in refs:
        assert torch.equal(on_cpu.get(ref), on_device.get(ref))
    assert rows and max(rows) == 16  # not the 4800 columns (rows) of the whole resized image


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("workers", [0, 2])
def test_cuda_embedding_with_side_stream_and_early_batches_equals_cpu(tmp_path, workers):
    sizes = [(40 + i % 7, 36 + i % 5) for i in range(60)]  # many shapes, 60 images: 15 batches of 4 or fewer
    refs = write_images(tmp_path, sizes=sizes)
    tf = ImageTransform(size=32, resize_to=36, crop_offset="floor")
    on_cpu = ImageEmbedder(_MeanEncoder(), tf, model_key="m", batch_size=4)
    on_gpu = ImageEmbedder(_MeanEncoder(), tf, model_key="m", batch_size=4, num_workers=workers, device="cuda")
    on_cpu.embed(refs)
    on_gpu.embed(refs)
    assert on_gpu.resize_on_device and on_gpu.encoded_images == len(refs)
    for ref in refs:
        torch.testing.assert_close(on_gpu.get(ref), on_cpu.get(ref))


def test_task_chunks_start_small_so_every_worker_returns_images_early():
    from pigbench.embedding import DECODE_CHUNK, FIRST_CHUNKS, _TaskChunks

    chunks = _TaskChunks(workers=3)
    chunks.tasks = iter(range(100))  # a generator: tasks arrive as contents are hashed
    sizes = [len(c) for c in chunks]
    first = 3 * len(FIRST_CHUNKS)
    assert sizes[:first] == [n for n in FIRST_CHUNKS for _ in range(3)]
    assert set(sizes[first:-1]) == {DECODE_CHUNK} and sum(sizes) == 100


@pytest.mark.parametrize("damage", [lambda path: path.write_bytes(b"damaged"), lambda path: torch.save(torch.ones(3), path)],
                         ids=["garbage", "not-a-dict"])
def test_a_damaged_disk_cache_file_is_embedded_again_not_failed(tmp_path, damage):
    refs = write_images(tmp_path / "img")
    first = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", cache_dir=tmp_path / "cache")
    first.embed(refs)
    for path in first.cache.directory.glob("*.pt"):
        damage(path)
    enc = _MeanEncoder()
    second = ImageEmbedder(enc, ImageTransform(size=32), model_key="m", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(second.stack(refs), first.stack(refs))
    assert enc.images == len(refs) and not second.failures


def test_an_index_naming_the_wrong_files_is_embedded_again_not_failed(tmp_path):
    refs = write_images(tmp_path / "img")
    first = ImageEmbedder(_MeanEncoder(), ImageTransform(size=32), model_key="m", batch_size=2, cache_dir=tmp_path / "cache")
    first.embed(refs)
    index = first.cache.directory / "index.tsv"
    lines = [line.split("\t") for line in index.read_text().splitlines()]
    names = list(dict.fromkeys(name for _, name in lines))
    assert len(names) > 2
    rotated = dict(zip(names, names[1:] + names[:1]))  # every line names another batch's file
    index.write_text("".join(f"{h}\t{rotated[name]}\n" for h, name in lines))
    enc = _MeanEncoder()
    second = ImageEmbedder(enc, ImageTransform(size=32), model_key="m", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(second.stack(refs), first.stack(refs))
    assert not second.failures and 0 < enc.images < len(refs)  # some features came from the files that hold them
