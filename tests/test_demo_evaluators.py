"""The weight-free evaluators: random, colorfulness, color-reference, ssim-reference."""

import io

import numpy as np
import pytest
from PIL import Image

from pigbench.image_features import PerImageCache
from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target
from pigbench.registry import evaluators
from pigbench.results import validate_results
from pigbench.runner import RunConfig, run

SIZE = 32
IMAGE_EVALUATORS = ["colorfulness", "color-reference", "ssim-reference"]
REFERENCE_EVALUATORS = ["color-reference", "ssim-reference"]


def png(image_id: str, array: np.ndarray) -> ImageRef:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), "RGB").save(buf, format="PNG")
    return ImageRef(image_id, buf.getvalue())


def picture(rgb, stripes: float = 0.0, seed: int = 0) -> np.ndarray:
    """A flat colour with optional diagonal stripes and a little noise, as (SIZE, SIZE, 3) uint8."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    shade = 1 + stripes * np.sin(xx + yy) + 0.03 * np.random.default_rng(seed).standard_normal((SIZE, SIZE))
    return np.clip(np.array(rgb, float) * shade[..., None], 0, 255)


# The user likes warm, striped pictures and dislikes dark, flat blue ones.
LIKED = [picture((230, 120, 40), 0.3, seed=i) for i in range(3)]
DISLIKED = [picture((20, 40, 110), 0.0, seed=10 + i) for i in range(3)]
REFS = tuple(ReferencePair(f"prompt {i}", png(f"pref{i}", LIKED[i]), png(f"rej{i}", DISLIKED[i]), f"r{i}")
             for i in range(3))


def episode(sample_id, image_a, image_b, references=REFS) -> Episode:
    return Episode("user", references, Target(sample_id, "a new prompt", image_a, image_b, Label.INVALID))


def make(name, **config):
    cls = evaluators.get(name)
    return cls(cls.Config(**config))


def test_random_is_deterministic_batch_independent_and_seeded():
    img = png("x", picture((1, 2, 3)))
    eps = [episode(f"s{i}", img, img) for i in range(200)]
    whole = [p.label for p in make("random").predict(eps)]
    one_by_one = [make("random").predict([ep])[0].label for ep in eps]
    reversed_order = [p.label for p in make("random").predict(eps[::-1])][::-1]
    assert whole == one_by_one == reversed_order
    assert set(whole) == {Label.A, Label.B} and 60 < whole.count(Label.A) < 140
    assert whole != [p.label for p in make("random", seed=1).predict(eps)]


def test_colorfulness_prefers_saturated_over_grey():
    ev = make("colorfulness")
    grey, vivid = png("grey", picture((128, 128, 128))), png("vivid", picture((250, 30, 200)))
    (p,) = ev.predict([episode("s", grey, vivid)])
    assert p.label == Label.B and p.score_a < 1.0 < p.score_b


@pytest.mark.parametrize("name", REFERENCE_EVALUATORS)
@pytest.mark.parametrize("contrastive", [True, False])
def test_reference_evaluators_prefer_a_copy_of_a_preferred_reference(name, contrastive):
    ev = make(name, size=SIZE, contrastive=contrastive)
    like_pref, like_rej = png("copy-of-pref0", LIKED[0]), png("copy-of-rej0", DISLIKED[0])
    first, second = ev.predict([episode("s1", like_pref, like_rej), episode("s2", like_rej, like_pref)])
    assert (first.label, second.label) == (Label.A, Label.B)
    assert first.score_a > first.score_b


@pytest.mark.parametrize("name", REFERENCE_EVALUATORS)
def test_reference_evaluators_follow_the_user_not_the_image(name):
    """Swapping which side the user preferred flips the prediction for the same two images."""
    flipped = tuple(ReferencePair(r.prompt, r.rejected, r.preferred, r.record_id) for r in REFS)
    warm, blue = png("warm", picture((220, 130, 50), 0.3, seed=99)), png("blue", picture((25, 45, 100), seed=98))
    ev = make(name, size=SIZE)
    a, b = ev.predict([episode("s1", warm, blue), episode("s2", warm, blue, references=flipped)])
    assert (a.label, b.label) == (Label.A, Label.B)


@pytest.mark.parametrize("name", IMAGE_EVALUATORS)
def test_corrupt_image_gives_invalid_naming_it_and_spares_the_batch(name):
    broken = ImageRef("broken-image-7", b"this is not an image")
    good_a, good_b = png("ok-a", LIKED[1]), png("ok-b", DISLIKED[1])
    preds = make(name).predict([episode("s1", good_a, good_b), episode("s2", broken, good_b),
                                episode("s3", good_b, good_a)])
    assert [p.label for p in preds][0] != Label.INVALID and preds[2].label != Label.INVALID
    assert preds[1].label == Label.INVALID and "broken-image-7" in preds[1].error
    assert preds[0].error is None and preds[2].error is None


def test_reference_free_evaluator_never_reads_references():
    def explode():
        raise AssertionError("a reference image was read")

    poisoned = (ReferencePair("p", ImageRef("bad-pref", explode), ImageRef("bad-rej", explode), "r"),)
    preds = make("colorfulness").predict([episode("s", png("a", LIKED[0]), png("b", DISLIKED[0]), poisoned)])
    assert preds[0].label != Label.INVALID and preds[0].error is None


@pytest.mark.parametrize("name", REFERENCE_EVALUATORS)
def test_references_are_decoded_once_per_image(name):
    calls = []

    def counted(image_id, array):
        def loader():
            calls.append(image_id)
            return Image.fromarray(array.astype(np.uint8), "RGB")
        return ImageRef(image_id, loader, known_hash=image_id)

    refs = tuple(ReferencePair("p", counted(f"p{i}", LIKED[i]), counted(f"r{i}", DISLIKED[i]), f"r{i}")
                 for i in range(3))
    eps = [episode(f"s{i}", png(f"a{i}", picture((10 * i, 90, 90), seed=i)),
                   png(f"b{i}", picture((90, 10 * i, 90), seed=i)), refs) for i in range(8)]
    ev = make(name, size=SIZE)
    ev.runtime = type(ev.runtime)(batch_size=3)
    ev.predict(eps[:4])
    ev.predict(eps[4:])
    assert sorted(calls) == sorted({c for c in calls}) and len(calls) == 6


def test_vectorized_ssim_equals_scikit_image():
    from skimage.metrics import structural_similarity

    from pigbench.evaluators.ssim_reference import moments, ssim_many, stack

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    refs = [np.clip(x + rng.integers(-30, 30, x.shape), 0, 255).astype(np.uint8), LIKED[0].astype(np.uint8),
            rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)]
    expected = [structural_similarity(x, r, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False) for r in refs]
    assert np.allclose(ssim_many(moments(x), stack([moments(r) for r in refs])), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("contrastive", [True, False])
def test_ssim_reference_scores_are_scikit_image_ssim_of_bicubic_resized_images(contrastive):
    """The recipe end to end: every image resized to size x size with PIL bicubic, scikit-image SSIM
    (Wang et al. settings), mean over the preferred references, minus the mean over the rejected ones."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    shapes = [(45, 37), (37, 46), (64, 48), (SIZE, SIZE), (33, 71), (80, 41)]  # (width, height)
    pictures = []
    for w, h in shapes:
        coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
        pictures.append(np.clip(np.asarray(coarse, float) + rng.integers(-20, 21, (h, w, 3)), 0, 255))
    refs = tuple(ReferencePair(f"p{i}", png(f"pref{i}", pictures[2 + i]), png(f"rej{i}", pictures[4 + i]), f"r{i}")
                 for i in range(2))
    (pred,) = make("ssim-reference", size=SIZE, contrastive=contrastive).predict(
        [episode("s", png("a", pictures[0]), png("b", pictures[1]), refs)])

    def resized(array):
        return np.asarray(Image.fromarray(array.astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC))

    def ssim(x, y):
        return structural_similarity(resized(x), resized(y), channel_axis=-1, data_range=255, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)

    for x, score in ((pictures[0], pred.score_a), (pictures[1], pred.score_b)):
        expected = np.mean([ssim(x, pictures[2 + i]) for i in range(2)])
        if contrastive:
            expected -= np.mean([ssim(x, pictures[4 + i]) for i in range(2)])
        assert score == pytest.approx(expected, abs=1e-9)


def test_reference_evaluator_without_references_is_invalid_with_reason():
    (p,) = make("color-reference").predict([episode("s", png("a", LIKED[0]), png("b", DISLIKED[0]), ())])
    assert p.label == Label.INVALID and "reference" in p.error


def test_per_image_cache_evicts_oldest_and_does_not_cache_failures():
    seen = []
    cache = PerImageCache(lambda img: seen.append(img.id) or img.id.upper(), max_items=2)
    a, b, c = (ImageRef(x, b"", known_hash=x) for x in "abc")
    assert [cache(a), cache(b), cache(a), cache(c), cache(a), cache(b)] == ["A", "B", "A", "C", "A", "B"]
    assert seen == ["a", "b", "c", "b"] and len(cache) == 2
    failing = PerImageCache(lambda img: img.open())
    for _ in range(2):
        with pytest.raises(ValueError, match="broken"):
            failing(ImageRef("broken", b"garbage"))
    assert len(failing) == 0


def test_per_image_cache_is_keyed_by_content_not_id():
    cache = PerImageCache(lambda img: img.read_bytes())
    a, other_a, same_a = ImageRef("ref_0.png", b"user 1"), ImageRef("ref_0.png", b"user 2"), ImageRef("copy", b"user 1")
    assert [cache(a), cache(other_a), cache(same_a)] == [b"user 1", b"user 2", b"user 1"] and len(cache) == 2


def test_load_rgb_resizes_to_a_square_of_size_whenever_the_image_is_not_one():
    from pigbench.image_features import load_rgb

    for w, h in [(SIZE, 20), (20, SIZE), (SIZE + 5, SIZE + 9), (SIZE, SIZE)]:
        image = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        want = np.asarray(image if (w, h) == (SIZE, SIZE) else image.resize((SIZE, SIZE), Image.Resampling.BICUBIC))
        assert np.array_equal(load_rgb(ImageRef("x", buf.getvalue()), SIZE), want)


def test_metadata():
    meta = {n: (evaluators.get(n).kind, evaluators.get(n).uses_references, evaluators.get(n).needs)
            for n in ["random", *IMAGE_EVALUATORS]}
    assert meta == {"random": ("baseline", False, ()), "colorfulness": ("scalar", False, ()),
                    "color-reference": ("similarity", True, ()), "ssim-reference": ("similarity", True, ())}


@pytest.mark.parametrize("name", ["color-reference", "random"])
def test_demo_runs_end_to_end_and_validates(tmp_path, name):
    out = run(RunConfig(evaluator=name, dataset="demo", dataset_options={"users": "8", "size": "32"},
                        output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"),
                        progress=False, n_bootstrap=100))
    assert validate_results(out.results_path) == []
    metrics = out.results["metrics"]
    assert metrics["n"] > 100 and metrics["invalid_rate"] == 0
