"""Weight lookup messages, strict loading, and reading pickled whole-module checkpoints without their code."""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch")

from torch import nn

from pigbench.evaluator import RequirementError
from pigbench.evaluators._weights import CheckpointError, WeightFile, check_file, fetch_file, load_strict, read_state_dict
from pigbench.registry import evaluators

pytestmark = pytest.mark.models

WF = WeightFile("demo-eval", "the demo checkpoint", "demo.pt", "PIGBENCH_DEMO_PATH", "https://example.org/demo")


HOW = ". Get it from https://example.org/demo, then pass the file or its folder with --model-path or the environment variable PIGBENCH_DEMO_PATH."


def missing(call, *args):
    """The message of the RequirementError that ``call(*args)`` raises."""
    with pytest.raises(RequirementError) as err:
        call(*args)
    return str(err.value)


def test_a_missing_local_file_is_named_with_where_to_get_it_and_how_to_point_to_it(tmp_path):
    expected = f"demo-eval: the demo checkpoint (demo.pt) was not found at {str(tmp_path / 'nowhere.pt')!r}" + HOW
    assert missing(check_file, str(tmp_path / "nowhere.pt"), WF) == expected
    assert missing(fetch_file, str(tmp_path / "nowhere.pt"), WF) == expected


def test_a_folder_without_the_file_names_the_folder_and_every_name_looked_for(tmp_path):
    assert missing(check_file, str(tmp_path), WF) == f"demo-eval: the demo checkpoint (demo.pt) was not found in the folder {str(tmp_path)!r}" + HOW
    also = WeightFile("demo-eval", "the demo checkpoint", "demo.pt", "PIGBENCH_DEMO_PATH", "https://example.org/demo",
                      also=("demo.safetensors",))
    assert missing(check_file, str(tmp_path), also) == (
        f"demo-eval: the demo checkpoint (demo.pt or demo.safetensors) was not found in the folder {str(tmp_path)!r}" + HOW)
    (tmp_path / "demo.safetensors").write_bytes(b"x")
    assert fetch_file(str(tmp_path), also) == tmp_path / "demo.safetensors"


def test_folder_spec_resolves_to_the_expected_file(tmp_path):
    (tmp_path / "demo.pt").write_bytes(b"x")
    assert fetch_file(str(tmp_path), WF) == tmp_path / "demo.pt"


def test_a_file_spec_of_another_kind_finds_its_companion_beside_it(tmp_path):
    """Said once where it looked: it used to read '(looked for .../config.json) (looked for '...renamed.pt')'."""
    config = WeightFile("demo-eval", "the demo config", "config.json", "PIGBENCH_DEMO_PATH", "https://example.org/demo")
    (tmp_path / "renamed.pt").write_bytes(b"x")
    assert fetch_file(str(tmp_path / "renamed.pt"), WF) == tmp_path / "renamed.pt"  # same kind: any name
    (tmp_path / "converted.safetensors").write_bytes(b"x")  # a checkpoint in another checkpoint format: itself
    assert fetch_file(str(tmp_path / "converted.safetensors"), WF) == tmp_path / "converted.safetensors"
    assert missing(fetch_file, str(tmp_path / "renamed.pt"), config) == (
        f"demo-eval: the demo config (config.json) was not found beside {str(tmp_path / 'renamed.pt')!r}: "
        f"there is no {str(tmp_path / 'config.json')!r}" + HOW)
    (tmp_path / "config.json").write_text("{}")
    assert fetch_file(str(tmp_path / "renamed.pt"), config) == tmp_path / "config.json"


def test_a_weight_without_a_default_location_says_so_and_where_to_get_it():
    assert missing(check_file, "", WF) == "demo-eval: the demo checkpoint (demo.pt) has no default download location" + HOW


def test_uncached_hub_and_url_weights_name_the_repository_or_url_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PIGBENCH_WEIGHTS_DIR", str(tmp_path / "w"))
    assert missing(check_file, "someorg/somerepo", WF) == (
        "demo-eval: the demo checkpoint (demo.pt in the hub repository someorg/somerepo) is not in the local "
        "Hugging Face cache and HF_HUB_OFFLINE=1" + HOW)
    assert missing(check_file, "https://example.org/files/demo.pt", WF) == (
        f"demo-eval: the demo checkpoint (demo.pt) is not in {tmp_path / 'w'} and cannot be downloaded from "
        "https://example.org/files/demo.pt (HF_HUB_OFFLINE=1)" + HOW)


def test_a_failed_download_names_the_repository_or_url_and_the_error(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setenv("PIGBENCH_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setattr("pigbench.hub.downloads_unavailable", lambda url=None: None)  # the server answers

    def refused(*args, **kwargs):
        raise ConnectionError("refused")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refused)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    assert missing(fetch_file, "https://example.org/files/demo.pt", WF) == (
        "demo-eval: the demo checkpoint (demo.pt) could not be downloaded from https://example.org/files/demo.pt "
        "(ConnectionError: refused)" + HOW)
    assert missing(fetch_file, "someorg/somerepo", WF) == (
        "demo-eval: the demo checkpoint (demo.pt in the hub repository someorg/somerepo) could not be downloaded "
        "(ConnectionError: refused)" + HOW)


def test_offline_a_url_spec_is_read_from_the_weights_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIGBENCH_WEIGHTS_DIR", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "demo.pt").write_bytes(b"x")
    assert fetch_file("https://example.org/files/demo.pt", WF) == tmp_path / "w" / "demo.pt"


@pytest.mark.parametrize("name, env", [("hps-v2.1", "PIGBENCH_HPSV21_PATH"), ("imagereward", "PIGBENCH_IMAGEREWARD_PATH"),
                                       ("aesthetics", "PIGBENCH_AESTHETICS_PATH"), ("mps", "PIGBENCH_MPS_PATH"),
                                       ("pickscore", "PIGBENCH_PICKSCORE_PATH"), ("dinoscore", "PIGBENCH_DINO_PATH")])
def test_check_requirements_fails_fast_on_missing_weights(monkeypatch, tmp_path, name, env):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PIGBENCH_WEIGHTS_DIR", str(tmp_path / "w"))
    cls = evaluators.get(name)
    with pytest.raises(RequirementError) as err:
        cls.check_requirements(cls.Config(model_path=str(tmp_path / "missing")))
    assert env in str(err.value) and "--model-path" in str(err.value)


def test_mps_has_no_default_download_and_says_where_to_get_it(monkeypatch):
    monkeypatch.delenv("PIGBENCH_MPS_PATH", raising=False)
    cls = evaluators.get("mps")
    with pytest.raises(RequirementError, match="Kwai-Kolors/MPS") as err:
        cls.check_requirements(cls.Config())
    assert "looked for" not in str(err.value)  # there is no location to name, not an empty ''


def test_model_path_env_var_is_used_when_the_option_is_empty(monkeypatch, tmp_path):
    cls = evaluators.get("hps-v2")
    monkeypatch.setenv("PIGBENCH_HPSV2_PATH", str(tmp_path / "x.pt"))
    assert cls.model_source(cls.Config()) == str(tmp_path / "x.pt")
    assert cls.model_source(cls.Config(model_path="a/b")) == "a/b"
    monkeypatch.delenv("PIGBENCH_HPSV2_PATH")
    assert cls.model_source(cls.Config()) == "xswu/HPSv2"


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("scale", torch.ones(2))


def test_load_strict_rejects_missing_unexpected_and_misshaped_keys():
    good = _Small().state_dict()
    load_strict(_Small(), good, "demo", "/w/demo.pt")
    with pytest.raises(CheckpointError) as err:
        load_strict(_Small(), {k: v for k, v in good.items() if k != "scale"}, "demo", "/w/demo.pt")
    assert str(err.value) == ("demo at '/w/demo.pt' does not match the model: 1 missing key(s) ['scale'], "
                              "0 unexpected key(s) [], 0 misshaped key(s) []")
    with pytest.raises(CheckpointError) as err:
        load_strict(_Small(), {**good, "extra.weight": torch.zeros(1)}, "demo", "/w/demo.pt")
    assert str(err.value) == ("demo at '/w/demo.pt' does not match the model: 0 missing key(s) [], "
                              "1 unexpected key(s) ['extra.weight'], 0 misshaped key(s) []")
    with pytest.raises(CheckpointError) as err:
        load_strict(_Small(), {**good, "lin.weight": torch.zeros(2, 4)}, "demo", "/w/demo.pt")
    assert str(err.value) == ("demo at '/w/demo.pt' does not match the model: 0 missing key(s) [], "
                              "0 unexpected key(s) [], 1 misshaped key(s) ['lin.weight']")


def test_load_strict_tolerates_only_a_saved_arange_position_ids():
    good = _Small().state_dict()
    load_strict(_Small(), {**good, "emb.position_ids": torch.arange(7)[None]}, "demo", "/w/demo.pt")
    with pytest.raises(CheckpointError, match="position_ids"):
        load_strict(_Small(), {**good, "emb.position_ids": torch.zeros(1, 7, dtype=torch.long)}, "demo", "/w/demo.pt")


def test_read_state_dict_unwraps_state_dict_and_dataparallel_prefix(tmp_path):
    sd = _Small().state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "c.pt")
    out = read_state_dict(tmp_path / "c.pt")
    assert set(out) == set(sd) and all(torch.equal(out[k], sd[k]) for k in sd)


def test_pickled_whole_module_is_read_without_importing_its_classes(tmp_path):
    """The MPS release pickles a module whose classes live in the authors' repo: simulate that."""
    mod = types.ModuleType("pigbench_test_trainer_models")

    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4, bias=False)
            self.register_buffer("inv_freq", torch.arange(3.0))
            self.register_buffer("cache", torch.zeros(2), persistent=False)
            self.note = {"anything": [1, 2]}

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Sequential(nn.Linear(2, 3), nn.GELU())
            self.cross_model = nn.ModuleList([Inner(), Inner()])

    for cls in (Inner, Outer):
        cls.__module__ = mod.__name__
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    sys.modules[mod.__name__] = mod
    try:
        model = Outer()
        torch.save(model, tmp_path / "whole.pth")
    finally:
        del sys.modules[mod.__name__]
    with pytest.raises(Exception):  # the real classes cannot be imported any more
        torch.load(tmp_path / "whole.pth", weights_only=False)
    out = read_state_dict(tmp_path / "whole.pth", "the simulated checkpoint")
    expected = model.state_dict()
    assert set(out) == set(expected) and "cross_model.0.cache" not in out
    assert all(torch.equal(out[k], expected[k]) for k in expected)


def test_a_file_without_tensors_is_a_clear_checkpoint_error(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path / "c.pt", "the demo checkpoint")
    assert str(err.value) == f"the demo checkpoint at {tmp_path / 'c.pt'} holds no state dict of tensors"


def test_an_unreadable_file_is_a_checkpoint_error_naming_it_and_the_cause(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path / "c.pt", "the demo checkpoint")
    assert str(err.value).startswith(f"the demo checkpoint at {tmp_path / 'c.pt'} could not be read: UnpicklingError: ")


def test_hub_source_fingerprint_is_the_cached_snapshot_commit(monkeypatch, tmp_path):
    from pigbench.evaluators._weights import source_fingerprint

    repo = tmp_path / "hub" / "models--someorg--clip"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert source_fingerprint("someorg/clip") == "hub:someorg/clip@0123abcd"
    assert source_fingerprint("someorg/absent") == "hub:someorg/absent@unknown-revision"
    (tmp_path / "w.bin").write_bytes(b"abc")
    assert source_fingerprint(str(tmp_path / "w.bin")).startswith("sha256:ba7816bf")
