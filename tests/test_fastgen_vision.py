"""The fast vision forward returns what Qwen2-VL's vision tower returns, for same-size and mixed-size
images and video-like grids, and each image's features do not depend on the other images in the call."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pigbench.fastgen.vision import VisionEncoder, frame_groups  # noqa: E402
from pigbench.judging.random_models import qwen2_vl  # noqa: E402

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def model():
    model, _ = qwen2_vl(seed=0)
    torch.manual_seed(0)
    with torch.no_grad():  # larger weights than the default init: outputs of order 1, peaked attention
        for p in model.model.visual.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.1)
    return model


def pixels(model, grids: list[list[int]], seed: int):
    cfg = model.config.vision_config
    rows = sum(t * h * w for t, h, w in grids)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2, generator=g)


def reference(model, px, grid):
    out = model.model.visual(px, grid_thw=grid)
    return getattr(out, "pooler_output", out)


@pytest.mark.parametrize("grids", [
    [[1, 4, 6], [1, 6, 4], [1, 4, 6]],  # two sizes, the second group between the first's images
    [[1, 4, 4]],  # one image alone
    [[1, 4, 6], [2, 4, 4], [1, 4, 6], [1, 4, 4]],  # a two-frame grid: its frames attend separately
])
def test_vision_encoder_matches_the_vision_tower(model, grids):
    px, grid = pixels(model, grids, seed=len(grids)), torch.tensor(grids)
    with torch.inference_mode():
        expected = reference(model, px, grid)
        ours = VisionEncoder(model)(px, grid)
    assert ours.shape == expected.shape
    assert expected.abs().max() > 1.0
    assert (ours - expected).abs().max() <= 1e-5


def test_each_image_is_encoded_as_if_alone(model):
    grids = [[1, 4, 6], [1, 6, 4], [1, 4, 6], [1, 4, 4]]
    px, grid = pixels(model, grids, seed=7), torch.tensor(grids)
    encoder = VisionEncoder(model)
    with torch.inference_mode():
        together = encoder(px, grid).split([t * h * w // 4 for t, h, w in grids])
        alone = [encoder(p, torch.tensor([g])) for p, g in zip(px.split([t * h * w for t, h, w in grids]), grids)]
    for a, b in zip(together, alone):
        assert (a - b).abs().max() <= 1e-5


def test_frame_groups_order_tokens_by_size_then_input_order():
    groups, order = frame_groups([[1, 2, 2], [1, 2, 4], [2, 2, 2]])
    assert groups == [(2, 2, 3), (2, 4, 1)]
    assert order.tolist() == [0, 1, 2, 3, 12, 13, 14, 15, 16, 17, 18, 19, 4, 5, 6, 7, 8, 9, 10, 11]
    assert frame_groups([[1, 2, 2], [1, 2, 2], [1, 2, 4]]) == ([(2, 2, 2), (2, 4, 1)], None)
