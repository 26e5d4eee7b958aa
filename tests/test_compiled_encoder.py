"""CompiledEncoder: one compiled batch shape (short batches padded, padding dropped), eager fallback."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pigbench.compiled_encoder import COMPILE_ENV, CompiledEncoder, compile_requested
from pigbench.embedding import ImageEmbedder, ImageTransform
from scalar_fixtures import write_images

pytestmark = pytest.mark.models


def _encode(x: torch.Tensor) -> torch.Tensor:
    """Per-image features that depend on every pixel of that image only."""
    return torch.stack([x.mean(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))], dim=1) * 2 + 1


def _recording_backend(shapes: list):
    def backend(gm, example_inputs):
        shapes.append(tuple(example_inputs[0].shape))
        return gm.forward
    return backend


def test_short_batches_are_padded_to_one_compiled_shape_and_give_eager_features():
    shapes: list = []
    enc = CompiledEncoder(_encode, batch_size=4, backend=_recording_backend(shapes))
    for n in (4, 3, 1):
        x = torch.rand(n, 3, 8, 8)
        torch.testing.assert_close(enc(x), _encode(x))
    assert shapes == [(4, 3, 8, 8)] and enc.failure is None  # compiled once, for the full batch shape


def test_a_failing_compile_warns_once_and_stays_eager():
    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here")

    enc = CompiledEncoder(_encode, batch_size=2, backend=broken)
    x = torch.rand(2, 3, 8, 8)
    with pytest.warns(RuntimeWarning, match="no compiler here.*PIGBENCH_COMPILE"):
        torch.testing.assert_close(enc(x), _encode(x))
    assert "no compiler here" in enc.failure
    torch.testing.assert_close(enc(x[:1]), _encode(x[:1]))  # no second attempt, no second warning


def test_embedder_features_are_the_same_through_the_compiled_encoder(tmp_path):
    refs = write_images(tmp_path)
    tf = ImageTransform(size=32)
    eager = ImageEmbedder(_encode, tf, model_key="m", batch_size=3)
    compiled = ImageEmbedder(CompiledEncoder(_encode, 3, backend="eager"), tf, model_key="m", batch_size=3)
    eager.embed(refs)
    compiled.embed(refs)
    assert compiled.encoder_calls == eager.encoder_calls == 3  # 8 images: 3 + 3 + 2 (padded to 3)
    for ref in refs:
        torch.testing.assert_close(compiled.get(ref), eager.get(ref))


@pytest.mark.parametrize("env, expected", [("", False), ("0", False), ("off", False), ("1", True), (" Yes", True)])
def test_compiling_is_opt_in(monkeypatch, env, expected):
    monkeypatch.setenv(COMPILE_ENV, env)
    assert compile_requested() is expected


def test_non_contiguous_batches_reuse_the_compiled_graph():
    shapes: list = []
    enc = CompiledEncoder(_encode, batch_size=2, backend=_recording_backend(shapes))
    x = torch.rand(2, 3, 8, 8)
    enc(x)
    torch.testing.assert_close(enc(x.transpose(-1, -2)), _encode(x.transpose(-1, -2)))
    assert len(shapes) == 1
