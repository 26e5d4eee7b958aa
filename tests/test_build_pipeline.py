"""The whole `pigbench build` chain through its command line, then `python -m pigbench.run` on the export.

prompts -> expand (fake OpenAI-compatible server) -> render (tiny random SDXL on CPU) -> review ->
annotate (real HTTP server, four annotators) -> export -> the `pigbench` adapter and the runner.
"""

import json
import random
import subprocess
import sys
import threading

import pytest

from build_fixtures import Browserless, FakeChatServer, good_reply, one_torch_thread, tiny_sdxl_dir
from pigbench.build.annotate.app import make_annotate_app
from pigbench.build.annotate.store import AnnotationStore
from pigbench.build.ranking import competition_ranks
from pigbench.build.webapp import make_local_server
from pigbench.build.workspace import Workspace, read_jsonl
from pigbench.cli import main as cli

pytestmark = pytest.mark.models
pytest.importorskip("torch")
pytest.importorskip("diffusers")


def test_build_chain_end_to_end(tmp_path, capsys):
    ws = Workspace.at(tmp_path / "ws")
    build = ["build", "--workdir", str(ws.root)]
    assert cli(build + ["prompts", "-n", "6", "--seed", "7"]) == 0
    with FakeChatServer(lambda base, attempt: (200, good_reply(base))) as server:
        assert cli(build + ["expand", "--api-base", server.url, "--model", "fake"]) == 0
    with one_torch_thread():
        assert cli(build + ["render", "--model", str(tiny_sdxl_dir()), "--device", "cpu", "--steps", "1",
                            "--width", "32", "--height", "32"]) == 0
    assert len(read_jsonl(ws.renders)) == 24
    sets = [v["set_id"] for v in read_jsonl(ws.variants)]
    for set_id in sets[:5]:
        assert cli(build + ["review", "--set", set_id, "--decision", "keep"]) == 0
    assert cli(build + ["review", "--set", sets[5], "--decision", "drop", "--reason", "low image quality"]) == 0
    assert cli(build + ["annotate", "init", "--min-sets", "3", "--max-sets", "4"]) == 0
    capsys.readouterr()
    assert cli(build + ["annotate", "invite", "--count", "4"]) == 0
    codes = [line.split(",")[1] for line in capsys.readouterr().out.split()[1:]]

    server = make_local_server(make_annotate_app(AnnotationStore(ws.annotate_db), ws.root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rng = random.Random(0)
    try:
        for code in codes:
            client = Browserless(f"http://127.0.0.1:{server.server_port}")
            assert client.request("POST", "/signin", form={"credential": code})[0] == 200
            for set_id in json.loads(client.request("GET", "/api/me")[1])["sets"]:
                ranks = list(competition_ranks([rng.randint(1, 4) for _ in range(4)]))
                assert client.request("POST", "/api/rankings", data={"set_id": set_id, "ranks": ranks})[0] == 200
    finally:
        server.shutdown()
        server.server_close()

    out = tmp_path / "pigbench-v1"
    assert cli(build + ["export", "--out", str(out)]) == 0
    instances = [json.loads(line) for line in (out / "instances.jsonl").read_text().splitlines()]
    assert len(instances) == 5 and sets[5] not in {i["instance_id"] for i in instances}
    assert all(i["generator"] == str(tiny_sdxl_dir()) for i in instances)

    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "pigbench.run", "--dataset", "pigbench", "--dataset-path", str(out),
                           "--evaluator", "color-reference", "--output", str(results),
                           "--cache-dir", str(tmp_path / "cache"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result_file, = results.rglob("*.json")
    assert cli(["validate", str(result_file)]) == 0
    data = json.loads(result_file.read_text())
    assert data["dataset"]["name"] == "pigbench" and data["split"]["reference_size"] == "dynamic"
    assert data["split"]["users"] == 4 and data["split"]["targets"] == data["metrics"]["n"] == 4 * 6
