"""pigbench.clip_tower and pigbench.add_layer_norm: the same features as transformers' CLIP image tower."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch.nn.functional as F

from pigbench.add_layer_norm import add_layer_norm
from pigbench.clip_tower import CUDNN_BATCH_MULTIPLE, CLIPImageTower
from pigbench.evaluator import Runtime
from pigbench.registry import evaluators
from scalar_fixtures import (kernel_running, run_in_triton_interpreter, run_predict, standard_episodes, tiny_clip_config,
                             tiny_clip_dir, write_images)

pytestmark = pytest.mark.models


def _transformers_features(model, pixels):
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_tower_equals_get_image_features(act):
    from transformers import CLIPModel

    config = tiny_clip_config()
    config.vision_config.hidden_act = act
    config.vision_config.num_hidden_layers = 3
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    pixels = torch.randn(5, 3, 32, 32)
    got = CLIPImageTower(model)(pixels)
    assert got.shape == (5, 16)
    assert torch.allclose(got, _transformers_features(model, pixels), atol=1e-5, rtol=0)


def test_tower_refuses_an_image_size_other_than_the_models():
    from transformers import CLIPModel

    tower = CLIPImageTower(CLIPModel(tiny_clip_config()).eval())
    with pytest.raises(ValueError, match="model's size"):
        tower(torch.randn(1, 3, 40, 40))


def test_tower_reads_a_vision_model_with_projection():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(**tiny_clip_config().vision_config.to_dict())
    config.projection_dim = 8
    torch.manual_seed(1)
    model = CLIPVisionModelWithProjection(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(pixel_values=pixels).image_embeds
    assert torch.allclose(CLIPImageTower(model)(pixels), want, atol=1e-5, rtol=0)


def _unfused(h, x, w, b, eps):
    s = h + x
    return s, F.layer_norm(s, s.shape[-1:], w, b, eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_add_layer_norm_without_triton_equals_unfused(dtype):
    g = torch.Generator().manual_seed(0)
    h, x = (torch.randn(6, 40, generator=g).to(dtype) for _ in range(2))
    w, b = torch.randn(40, generator=g).to(dtype), torch.randn(40, generator=g).to(dtype)
    want_h, want_y = _unfused(h, x, w, b, 1e-5)
    got_y = add_layer_norm(h, x, w, b, 1e-5)  # CPU tensors: the torch path
    assert torch.equal(h, want_h) and torch.equal(got_y, want_y)


def test_triton_kernel_in_the_interpreter_equals_unfused():
    """The Triton kernel itself, run on the CPU by Triton's interpreter (in a child process, since
    TRITON_INTERPRET must be set before Triton is imported)."""
    pytest.importorskip("triton")
    run_in_triton_interpreter("""
        import torch, torch.nn.functional as F
        from pigbench.add_layer_norm import KERNEL, add_layer_norm
        assert KERNEL.kernel is not None
        for dtype in (torch.float32, torch.float16):
            g = torch.Generator().manual_seed(0)
            h, x = (torch.randn(5, 40, generator=g).to(dtype) for _ in range(2))
            w, b = torch.randn(40, generator=g).to(dtype), torch.randn(40, generator=g).to(dtype)
            s = h + x
            want = F.layer_norm(s.float(), (40,), w.float(), b.float(), 1e-5).to(dtype)
            got = add_layer_norm(h, x, w, b, 1e-5)
            assert torch.equal(h, s), dtype
            # float32: summation order; float16: one rounding step of each value
            tol = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps * want.float().abs().clamp(min=1)
            assert ((got.float() - want.float()).abs() <= tol).all(), dtype
        assert KERNEL.failure is None
        print("ok")
    """)


def test_a_kernel_that_fails_warns_once_and_torch_takes_over(monkeypatch):
    from pigbench import add_layer_norm as module

    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("no Triton backend for this device\nmore detail")

    kernel_running(monkeypatch, module.KERNEL, broken)
    h, x, w, b = torch.randn(3, 8), torch.randn(3, 8), torch.ones(8), torch.zeros(8)
    want_h, want_y = _unfused(h, x, w, b, 1e-5)
    with pytest.warns(RuntimeWarning, match=r"fused add \+ layer norm kernel failed \(RuntimeError: no Triton backend for this device\)"):
        y = module.add_layer_norm(h, x, w, b, 1e-5)
    assert torch.equal(h, want_h) and torch.equal(y, want_y)
    module.add_layer_norm(h.clone(), x, w, b, 1e-5)
    assert len(calls) == 1  # not tried again


def test_running_out_of_memory_is_not_a_kernel_failure(monkeypatch):
    from pigbench import add_layer_norm as module

    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    kernel_running(monkeypatch, module.KERNEL, oom)
    with pytest.raises(torch.OutOfMemoryError):
        module.add_layer_norm(torch.zeros(2, 8), torch.zeros(2, 8), torch.ones(8), torch.zeros(8), 1e-5)
    assert module.KERNEL.failure is None


def test_add_layer_norm_rejects_mismatched_inputs_for_the_kernel(monkeypatch):
    from pigbench import add_layer_norm as module

    kernel_running(monkeypatch, module.KERNEL, lambda *a: pytest.fail("the kernel must not run"))
    with pytest.raises(ValueError, match="contiguous h and x of one shape and dtype"):
        module.add_layer_norm(torch.zeros(4, 8), torch.zeros(8, 4).t(), torch.ones(8), torch.zeros(8), 1e-5)


def test_image_encoder_choice(monkeypatch, tmp_path):
    from pigbench.evaluators._hf_clip import TOWER_ENV, image_encoder

    model = tiny_clip_dir(tmp_path / "clip")
    monkeypatch.delenv(TOWER_ENV, raising=False)
    assert image_encoder(model, torch.device("cpu"))[1] == "transformers"
    monkeypatch.setenv(TOWER_ENV, "pigbench")
    encode, name = image_encoder(model, torch.device("cpu"))
    assert name == "pigbench" and isinstance(encode, CLIPImageTower)
    monkeypatch.setenv(TOWER_ENV, "fast")
    with pytest.raises(ValueError, match="PIGBENCH_CLIP_TOWER must be pigbench or transformers, got 'fast'"):
        image_encoder(model, torch.device("cpu"))


@pytest.mark.parametrize("name", ["pickscore", "clipscore", "clip-i"])
def test_evaluators_score_the_same_with_either_tower(name, monkeypatch, tmp_path):
    from pigbench.evaluators._hf_clip import TOWER_ENV

    tiny_clip_dir(tmp_path / "clip")
    images = write_images(tmp_path / "images")
    options = {"model_path": str(tmp_path / "clip")}
    if name == "pickscore":
        options["processor_path"] = str(tmp_path / "clip")
    scores = {}
    cls = evaluators.get(name)
    for tower in ("transformers", "pigbench"):
        monkeypatch.setenv(TOWER_ENV, tower)
        ev = cls(cls.Config(**options), Runtime(batch_size=3))
        scores[tower] = [s for pair in run_predict(ev, standard_episodes(images, with_refs=True)) for s in pair]
        assert ev.provenance()["image_tower"] == tower
    assert scores["pigbench"] == pytest.approx(scores["transformers"], abs=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_tower_and_kernel(dtype, act):
    from transformers import CLIPModel

    h, x = (torch.randn(300, 1280, device="cuda", dtype=dtype) for _ in range(2))
    w, b = torch.randn(1280, device="cuda", dtype=dtype), torch.randn(1280, device="cuda", dtype=dtype)
    want_h, want_y = _unfused(h, x, w, b, 1e-5)
    got_y = add_layer_norm(h, x, w, b, 1e-5)
    assert torch.equal(h, want_h)
    assert (got_y.float() - want_y.float()).abs().max() <= 2 ** -6 * want_y.float().abs().max()

    torch.manual_seed(0)
    config = tiny_clip_config()
    config.vision_config.hidden_act = act
    model = CLIPModel(config).eval().to("cuda", dtype)
    tower = CLIPImageTower(model)
    assert tower.gelu_epilogue == (act == "gelu")
    for n in (7, CUDNN_BATCH_MULTIPLE):  # flash attention, then cuDNN's
        pixels = torch.randn(n, 3, 32, 32, device="cuda", dtype=dtype)
        want = _transformers_features(model, pixels).float()
        got = tower(pixels).float()
        assert (got - want).abs().max() <= 2e-2 * want.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_gelu_epilogue_is_as_close_to_exact_gelu_as_the_unfused_mlp(dtype):
    from transformers import CLIPModel

    config = tiny_clip_config()
    config.vision_config.update(dict(hidden_act="gelu", hidden_size=256, intermediate_size=1024))
    torch.manual_seed(0)
    model = CLIPModel(config).eval().to("cuda")
    layer = model.vision_model.encoder.layers[0]
    y = torch.randn(2048, 256, device="cuda")
    with torch.no_grad():
        exact = layer.mlp.fc2(F.gelu(layer.mlp.fc1(y)))  # float32, exact GELU
        model.to(dtype)
        unfused = layer.mlp(y.to(dtype)).float()
        fused = CLIPImageTower(model)._mlp(layer, y.to(dtype)).float()
    unfused_error, fused_error = (unfused - exact).abs().max(), (fused - exact).abs().max()
    assert fused_error <= 1.25 * unfused_error, (fused_error, unfused_error)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_kernel_on_a_second_device():
    h, x = (torch.randn(64, 1280, device="cuda:1", dtype=torch.float16) for _ in range(2))
    w, b = torch.ones(1280, device="cuda:1", dtype=torch.float16), torch.zeros(1280, device="cuda:1", dtype=torch.float16)
    want_h, want_y = _unfused(h, x, w, b, 1e-5)
    got_y = add_layer_norm(h, x, w, b, 1e-5)
    assert torch.equal(h, want_h) and (got_y.float() - want_y.float()).abs().max() <= 2e-2
