"""Corrupt input: a truncated image, a record with a missing field, a user with one record."""

import io

import pytest
from PIL import Image

from pigbench.protocol import Episode, ImageError, ImageRef, Label, PreferenceRecord, ReferencePair, Target
from pigbench.runner import predict_isolated
from pigbench.splits import build_split

from toy import ToyBrightness, grey


def jpeg_bytes(level=128):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (level,) * 3).save(buf, format="JPEG")
    return buf.getvalue()


def test_truncated_image_error_names_the_image():
    ref = ImageRef("img-7", jpeg_bytes()[:40])
    with pytest.raises(ImageError, match="img-7.*cannot decode"):
        ref.open()


def test_truncated_image_gives_one_invalid_prediction_not_a_crash():
    good = [Episode("u", (), Target(f"s{i}", "p", grey(2 * i), grey(2 * i + 1), Label.A)) for i in range(3)]
    bad = Episode("u", (), Target("bad", "p", ImageRef("truncated.jpg", jpeg_bytes()[:40]), grey(99), Label.A))
    preds = predict_isolated(ToyBrightness(), [good[0], bad, good[1], good[2]])
    assert [p.sample_id for p in preds] == ["s0", "bad", "s1", "s2"]
    assert preds[1].label == Label.INVALID and "truncated.jpg" in preds[1].error
    assert all(p.label in (Label.A, Label.B) for p in preds[:1] + preds[2:])


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "EPS"])
def test_an_image_in_a_format_outside_the_datasets_ones_is_refused_by_name(fmt):
    """Datasets are untrusted: Pillow's every decoder was reachable (EPS runs Ghostscript where it is
    installed). Only the formats of text-to-image datasets are decoded, and the error says which."""
    buf = io.BytesIO()
    if fmt == "EPS":
        buf.write(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n")
    else:
        Image.new("RGB", (16, 16), (9, 9, 9)).save(buf, format=fmt)
    assert Image.open(io.BytesIO(buf.getvalue())).format == fmt  # Pillow alone opens it
    with pytest.raises(ImageError, match=r"img-9.*not an image in a format pigbench reads \(JPEG, PNG, WEBP"):
        ImageRef("img-9", buf.getvalue()).open()


@pytest.mark.parametrize("source", ["file", "loader"])
def test_a_file_or_a_loaders_bytes_outside_the_datasets_formats_are_refused_too(tmp_path, source):
    """Images given as a path or by a loader returning bytes go through the same format restriction
    as in-memory bytes (most adapters name files)."""
    path = tmp_path / "img.ppm"
    Image.new("RGB", (16, 16), (9, 9, 9)).save(path, format="PPM")
    ref = ImageRef("img-9", path if source == "file" else path.read_bytes)
    with pytest.raises(ImageError, match=r"img-9.*not an image in a format pigbench reads"):
        ref.open()


@pytest.mark.parametrize("damage", [lambda jpeg: b"", lambda jpeg: b"\0" * 4 + jpeg[4:]])
def test_a_damaged_image_is_not_said_to_be_of_another_format(damage):
    """An empty file (a download cut short) or a JPEG with a garbled header was reported as 'not an image in
    a format pigbench reads': the user looked for a format problem. The message names both causes now."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(buf, format="JPEG")
    with pytest.raises(ImageError, match=r"img-9.*JPEG, PNG, WEBP, GIF, BMP, TIFF\) or damaged$"):
        ImageRef("img-9", damage(buf.getvalue())).open()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_the_formats_of_text_to_image_datasets_decode(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format=fmt)
    assert ImageRef("ok", buf.getvalue()).open().getpixel((3, 3))[0] > 150


def test_missing_file_error_names_path(tmp_path):
    with pytest.raises(ImageError, match="nope.png"):
        ImageRef("x", tmp_path / "nope.png").read_bytes()


def test_record_with_missing_field_is_a_clear_error():
    with pytest.raises(ValueError, match="record 'r1': 2 images but 1 ranks"):
        PreferenceRecord("r1", "u", "p", (grey(1), grey(2)), (1,))
    with pytest.raises(ValueError, match="record 'r2': needs at least 2 images"):
        PreferenceRecord("r2", "u", "p", (grey(1),), (1,))


def test_user_with_one_record_is_skipped_and_counted():
    recs = [PreferenceRecord(f"a{i}", "a", f"p{i}", (grey(2 * i), grey(2 * i + 1)), (1, 2)) for i in range(5)]
    recs.append(PreferenceRecord("lonely", "b", "q", (grey(200), grey(201)), (2, 1)))
    split = build_split(recs, "ds", seed=0, reference_size=2)
    assert {e.user_id for e in split.episodes} == {"a"}
    assert split.skipped_users == {"fewer than 2 decisive reference records plus 1 target record": 1}
    assert split.skip_examples[next(iter(split.skipped_users))] == ["user b"]


def test_reference_pair_images_are_lazy():
    calls = []

    def loader():
        calls.append(1)
        return Image.new("RGB", (4, 4))

    ReferencePair("p", ImageRef("x", loader, known_hash="hx"), ImageRef("y", loader, known_hash="hy"))
    assert calls == []
