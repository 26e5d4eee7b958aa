"""Without a reachable hub, a model or dataset that is not cached is a clear error at once.

The hub is simulated on the loopback interface: a closed port stands for a machine without
internet, a local HTTP server for a hub that answers. No test leaves this machine.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pigbench.adapter import DatasetError
from pigbench.evaluator import RequirementError, require_local_folder, resolve_local_or_hub
from pigbench.hub import cache_only, not_downloadable, remote_files, resolve_root, unreachable

TESTS = Path(__file__).parent


def closed_port_url() -> str:
    """An http URL on which nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def dead_hub(monkeypatch, tmp_path) -> str:
    """Online mode, an empty hub cache, and a hub endpoint that does not answer."""
    url = closed_port_url()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PIGBENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    return url


def test_unreachable_names_the_server_and_why():
    url = closed_port_url()
    why = unreachable(url)
    assert why is not None and why.startswith(f"{url} does not answer:") and "refused" in why.lower()


def test_a_server_answering_any_status_is_reachable():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert unreachable(f"http://127.0.0.1:{server.server_address[1]}/") is None
    finally:
        server.shutdown()


def test_cached_files_never_need_the_hub(dead_hub):
    assert not_downloadable(cached=True) is None
    assert "does not answer" in not_downloadable(cached=False)
    assert cache_only("org/model")
    assert not cache_only(str(TESTS))  # a local path is never looked up on the hub


def test_model_check_fails_at_once_saying_how_to_download(dead_hub):
    from pigbench.registry import evaluators

    pickscore = evaluators.get("pickscore")
    with pytest.raises(RequirementError) as err:
        pickscore.check_requirements(pickscore.Config())
    msg = str(err.value)
    for part in ("pickscore", "yuvalkirstain/PickScore_v1", "not in the local Hugging Face cache", f"{dead_hub} does not answer",
                 "hf download yuvalkirstain/PickScore_v1 --local-dir DIR", "--model-path DIR", "PIGBENCH_PICKSCORE_PATH=DIR"):
        assert part in msg, part


@pytest.mark.parametrize("name, option, published, hint", [
    ("clipscore", "model_path", "openai/clip-vit-base-patch32", "--model-path DIR or set PIGBENCH_CLIPSCORE_PATH=DIR"),
    ("dinoscore", "model_path", "facebook/dinov2-base", "--model-path DIR or set PIGBENCH_DINO_PATH=DIR"),
    ("pickscore", "model_path", "yuvalkirstain/PickScore_v1", "--model-path DIR or set PIGBENCH_PICKSCORE_PATH=DIR"),
    ("aesthetics", "clip_path", "openai/clip-vit-large-patch14", "--option clip_path=DIR or set PIGBENCH_AESTHETICS_CLIP_PATH=DIR"),
])
def test_a_local_model_path_that_does_not_exist_says_where_to_download_it(tmp_path, monkeypatch, name, option, published, hint):
    from pigbench.registry import evaluators

    monkeypatch.setenv("PIGBENCH_AESTHETICS_PATH", str(tmp_path))
    (tmp_path / "sac+logos+ava1-l14-linearMSE.pth").write_bytes(b"x")
    cls = evaluators.get(name)
    with pytest.raises(RequirementError) as err:
        cls.check_requirements(cls.Config(**{option: str(tmp_path / "nope")}))
    assert f"was not found at '{tmp_path / 'nope'}'. Download it (`hf download {published} --local-dir DIR`), then pass {hint}." in str(err.value)


def test_an_option_flag_takes_dir_without_a_space(dead_hub):
    with pytest.raises(RequirementError, match=r"pass --option clip_path=DIR or set PIGBENCH_X=DIR\.$"):
        resolve_local_or_hub("org/clip", "demo", "PIGBENCH_X", "the CLIP model", flag="--option clip_path=")


@pytest.mark.parametrize("path", ["ckpt/lora", "lora", "./ckpt/lora", "/no/such/ckpt", "~/ckpt/lora"])
def test_a_missing_local_folder_is_no_such_folder_not_a_hub_error(dead_hub, tmp_path, monkeypatch, path):
    """A mistyped relative folder (ckpt/lora) looks like a hub id: it was said to be missing from the hub
    cache, with an `hf download ckpt/lora` command. Where only a folder will do, it is no such folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RequirementError) as err:
        require_local_folder(path, "demo", "PIGBENCH_X", "the adapter", "--option lora=")
    assert str(err.value) == f"demo: no such folder: {path!r} (the adapter); pass --option lora=DIR or set PIGBENCH_X=DIR."


def test_a_local_folder_is_accepted_and_a_file_refused(dead_hub, tmp_path):
    require_local_folder(str(tmp_path), "demo", "", "the adapter", "--option lora=")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(RequirementError) as err:
        require_local_folder(str(tmp_path / "adapter_model.safetensors"), "demo", "", "the adapter", "--option lora=")
    assert str(err.value) == (f"demo: the adapter {str(tmp_path / 'adapter_model.safetensors')!r} is a file, "
                              "not a folder; pass --option lora=DIR.")


def test_where_hub_ids_are_taken_a_hub_id_looking_path_still_asks_the_hub(dead_hub, tmp_path, monkeypatch):
    """Callers that take hub ids keep their error: ckpt/lora may be a repository."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RequirementError, match=f"demo: the model 'ckpt/lora' is not in the local Hugging Face cache and {dead_hub}"):
        resolve_local_or_hub("ckpt/lora", "demo", "PIGBENCH_X", "the model")


@pytest.mark.parametrize("path, hub_id", [
    ("org/model", True), ("org/model.v2", True), ("org/", True),
    ("model", False), ("org/model/sub", False), ("a/b/c/d", False), ("/org/model", False), ("/model", False),
    ("./org", False), ("../model", False), (".cache/model", False), ("~/model", False), ("~org/model", False),
    ("org\\model", False), ("", False),
])
def test_a_missing_path_is_a_hub_id_only_as_owner_slash_name(dead_hub, tmp_path, monkeypatch, path, hub_id):
    """The hub is asked only about owner/name: one '/', not starting with '.', '/' or '~'; any other
    missing path is said to be missing where it is."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RequirementError) as err:
        resolve_local_or_hub(path, "demo", "PIGBENCH_X", "the model")
    asked_the_hub = "is not in the local Hugging Face cache" in str(err.value)
    assert asked_the_hub == hub_id
    assert asked_the_hub != (f"was not found at {path!r}" in str(err.value))


@pytest.mark.parametrize("path, hub_id", [("org/model", True), ("org/model\\sub", False), ("org\\x/model", False)])
def test_a_windows_separator_makes_a_missing_path_local(monkeypatch, path, hub_id):
    from pigbench.evaluator import _looks_like_hub_id

    monkeypatch.setattr(os, "sep", "/")
    assert _looks_like_hub_id(path) == (path.count("/") == 1)  # on POSIX a backslash is a name's character
    monkeypatch.setattr(os, "sep", "\\")
    assert _looks_like_hub_id(path) == hub_id


def test_weight_files_on_the_hub_or_at_a_url_fail_at_once(dead_hub):
    from pigbench.evaluators._weights import WeightFile, check_file, fetch_file

    wf = WeightFile("demo-eval", "the demo checkpoint", "demo.pt", "PIGBENCH_DEMO_PATH", "https://example.org/demo")
    with pytest.raises(RequirementError, match=f"not in the local Hugging Face cache and {dead_hub} does not answer"):
        fetch_file("someorg/somerepo", wf)
    with pytest.raises(RequirementError, match=rf"cannot be downloaded from {dead_hub}/files/demo.pt \({dead_hub}/ does not answer"):
        check_file(f"{dead_hub}/files/demo.pt", wf)


def test_dataset_download_fails_at_once_with_the_download_command(dead_hub):
    with pytest.raises(DatasetError) as err:
        resolve_root(what="demo data", path=None, env_var="PIGBENCH_DEMO_DATA", repo_id="org/data", allow_patterns=["data/*"])
    msg = str(err.value)
    assert f"it is not in the local Hugging Face cache and {dead_hub} does not answer" in msg
    assert "hf download org/data --repo-type dataset --include 'data/*' --local-dir DIR" in msg
    assert "pass --dataset-path DIR or set PIGBENCH_DEMO_DATA=DIR" in msg
    with pytest.raises(DatasetError, match=f"org/data cannot be read from the hub \\({dead_hub} does not answer"):
        remote_files("org/data", "data/*.parquet", what="demo data", hint="use a local copy")


def test_dataset_download_asks_for_the_dataset_at_its_revision_from_the_cache_when_offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE (any true spelling) means the local cache only, in HF_HUB_CACHE; --dataset-path wins
    over the environment variable, which wins over the hub."""
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs["revision"] == "gone":
            raise FileNotFoundError("not cached")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert resolve_root(what="demo", path=None, env_var="", repo_id="org/data", allow_patterns=["data/*"], revision="v1") == tmp_path
    assert calls == [("org/data", {"repo_type": "dataset", "revision": "v1", "allow_patterns": ["data/*"],
                                   "local_files_only": True, "cache_dir": str(tmp_path / "cache")})]
    with pytest.raises(DatasetError, match=r"^demo: cannot get org/data \(it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1\); "):
        resolve_root(what="demo", path=None, env_var="", repo_id="org/data", revision="gone")
    flag, env = tmp_path / "flag", tmp_path / "env"
    flag.mkdir()
    env.mkdir()
    monkeypatch.setenv("PIGBENCH_DEMO_DATA", str(env))
    assert resolve_root(what="demo", path=str(flag), env_var="PIGBENCH_DEMO_DATA", repo_id="org/data") == flag
    assert resolve_root(what="demo", path=None, env_var="PIGBENCH_DEMO_DATA", repo_id="org/data") == env
    assert len(calls) == 2


def test_a_hub_error_for_a_mistyped_repo_id_is_one_line(monkeypatch):
    """The hub library's 404 spans lines; the error stays one line, ending with the download command."""
    import huggingface_hub

    import pigbench.hub

    def not_found(*args, **kwargs):
        raise OSError("404 Client Error.\n\nRepository Not Found for url: https://hf.co/api/datasets/org/dtaa.\n"
                      "Please make sure you specified the correct `repo_id`.")

    class HubFS:
        glob = not_found

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    monkeypatch.setattr(huggingface_hub, "HfFileSystem", HubFS)
    monkeypatch.setattr(pigbench.hub, "downloads_unavailable", lambda url=None: None)
    found = "404 Client Error. Repository Not Found for url: https://hf.co/api/datasets/org/dtaa. Please make sure you"
    with pytest.raises(DatasetError, match=rf"^demo: cannot get org/dtaa \(the hub failed: {found}[^\n]*; download it with `hf download"):
        resolve_root(what="demo", path=None, env_var="", repo_id="org/dtaa")
    with pytest.raises(DatasetError, match=rf"^demo: cannot list org/dtaa on the hub \({found}[^\n]*; use a local copy$"):
        remote_files("org/dtaa", "data/*.parquet", what="demo", hint="use a local copy")


def test_without_huggingface_hub_the_hub_datasets_name_the_data_extra(dead_hub, monkeypatch):
    """A base install: reading a dataset (or its images) from the hub says which extra to install."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub fails
    with pytest.raises(DatasetError, match=r"^demo data: huggingface_hub is not installed \(pip install 'pigbench\[data\]'\); or download"):
        resolve_root(what="demo data", path=None, env_var="", repo_id="org/data", allow_patterns=["data/*"])
    with pytest.raises(DatasetError, match=r"^demo images: huggingface_hub is not installed \(pip install 'pigbench\[data\]'\); or use a local copy$"):
        remote_files("org/data", "data/*.parquet", what="demo images", hint="use a local copy")


def test_cli_without_a_reachable_hub_is_a_one_line_error(tmp_path):
    """The user's view: exit status 2 and a message, no traceback and no retries."""
    url = closed_port_url()
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": url,
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "pigbench.run", "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
           "--no-progress", "--evaluator"]
    model = subprocess.run([*cmd, "pickscore"], env=env, capture_output=True, text=True, timeout=120)
    assert model.returncode == 2 and "Traceback" not in model.stderr and "Retrying" not in model.stderr
    assert f"error: pickscore: the PickScore model 'yuvalkirstain/PickScore_v1' is not in the local Hugging Face cache and {url}" in model.stderr
    data = subprocess.run([*cmd, "random", "--dataset", "pickapic"], env=env, capture_output=True, text=True, timeout=120)
    assert data.returncode == 2 and "Traceback" not in data.stderr and "Retrying" not in data.stderr
    assert f"{url} does not answer" in data.stderr and "hf download yuvalkirstain/pickapic_v2_no_images" in data.stderr


def test_a_cached_model_runs_without_asking_a_hub_that_does_not_answer(tmp_path):
    """A model in the hub cache loads with ``local_files_only`` when the hub does not answer,
    instead of each file waiting through the hub library's retries first."""
    pytest.importorskip("transformers")
    from scalar_fixtures import tiny_clip_dir

    commit = "0" * 40
    repo = tmp_path / "hf" / "hub" / "models--org--tiny-clip"
    tiny_clip_dir(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": closed_port_url(),
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(TESTS)}
    out = subprocess.run([sys.executable, "-m", "pigbench.run", "--evaluator", "clipscore", "--model-path", "org/tiny-clip",
                          "--limit", "4", "--device", "cpu", "--output", str(tmp_path / "results"),
                          "--cache-dir", str(tmp_path / "cache"), "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Retrying" not in out.stderr and "does not answer" not in out.stderr
    results = json.loads(next((tmp_path / "results").rglob("clipscore*.json")).read_text())
    assert results["evaluator"]["models"]["revision"] == f"hub:org/tiny-clip@{commit}"


@pytest.mark.parametrize("name, env_var, source", [
    ("pip", "PIGBENCH_PIP_PATH", "unzip PIP-dataset.zip (its Google Drive link is in https://github.com/zzjchen/Tailored-Visions)"),
    ("pasta", "PIGBENCH_PASTA_PATH", "download the release from https://www.kaggle.com/datasets/googleai/pasta-data"),
    ("pigbench", "PIGBENCH_PIGBENCH_PATH", "build one with `pigbench build` (docs/building_pigbench.md"),
])
def test_a_dataset_not_on_the_hub_without_a_local_copy_says_where_to_get_one(monkeypatch, tmp_path, name, env_var, source):
    from pigbench.registry import adapters

    monkeypatch.delenv(env_var, raising=False)
    options = {"images": str(tmp_path)} if name == "pip" else {}
    with pytest.raises(DatasetError) as err:
        list(adapters.get(name)(path=None, options=options).records())
    assert source in str(err.value)
    assert str(err.value).endswith(f"then pass --dataset-path DIR or set {env_var}=DIR")
