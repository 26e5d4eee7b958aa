"""Data-parallel runs: launcher variables, sharding by user, per-rank stores, and the runner under
``torchrun`` with the gloo backend (equal to a one-process run; resume after SIGKILL with another
number of ranks)."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pigbench.distributed import RunStores, World, assign_users, shard, user_costs
from pigbench.metrics import metric_differences
from pigbench.protocol import Dimension, Episode, ImageRef, Label, Prediction, ReferencePair, Target
from pigbench.results import validate_results
from pigbench.runner import RunAborted, RunConfig, run
from pigbench.store import PredictionStore

TESTS = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
SLOW = ["--option", "sleep=0.1"]  # toy-brightness: seconds per score() call


# launcher variables, devices -----------------------------------------------------------------------
def test_world_from_launcher_variables():
    assert World.from_env({}) == World(0, 1, 0)
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(ValueError, match="inconsistent"):
        World.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="integers"):
        World.from_env({"WORLD_SIZE": "two"})


def test_bare_cuda_becomes_the_local_gpu_in_a_multi_rank_run():
    pytest.importorskip("torch")
    assert World(3, 4, 1).bind_device("cuda") == "cuda:1"
    assert World(3, 4, 1).bind_device("cuda:0") == "cuda:0" and World(3, 4, 1).bind_device("cpu") == "cpu"
    assert World().bind_device("cuda") == "cuda"


def test_a_multi_rank_launch_without_torch_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    """A base install under torchrun's variables: exit 2 with the install hint, no traceback."""
    from pigbench.cli import main as cli_main

    monkeypatch.setitem(sys.modules, "torch.distributed", None)  # import torch.distributed fails
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    argv = ["run", "--evaluator", "random", "--limit", "4", "--output", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert cli_main(argv) == 2
    assert capsys.readouterr().err == ("error: WORLD_SIZE=2 (a data-parallel launch) needs PyTorch: "
                                       "pip install 'pigbench[models]'\n")
    assert not (tmp_path / "results").exists()


def test_a_bad_group_timeout_is_one_line_naming_the_variable(tmp_path, monkeypatch, capsys):
    """PIGBENCH_DIST_TIMEOUT=1h used to print "error: could not convert string to float: '1h'"."""
    pytest.importorskip("torch.distributed")
    from pigbench.cli import main as cli_main

    argv = ["run", "--evaluator", "random", "--limit", "4", "--output", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for bad in ("1h", "0", "nan"):
        monkeypatch.setenv("PIGBENCH_DIST_TIMEOUT", bad)
        assert cli_main(argv) == 2
        assert capsys.readouterr().err == (f"error: PIGBENCH_DIST_TIMEOUT must be a positive number of seconds, "
                                           f"got {bad!r}\n")


class Peers(World):
    """Rank 0 of a world whose other ranks reported ``peers`` in every all-gather; ``sent``: what this
    rank gave each all-gather."""

    def __init__(self, *peers):
        super().__init__(0, 1 + len(peers), 0)
        object.__setattr__(self, "peers", peers)
        object.__setattr__(self, "sent", [])

    def all_gather(self, obj):
        self.sent.append(obj)
        if isinstance(obj, bool):  # the runner's "hub model not cached here?": the others have it cached
            return [obj, *(False for _ in self.peers)]
        return [obj, *self.peers]

    def broadcast(self, obj):
        return obj  # rank 0's


def test_an_error_on_one_rank_is_raised_on_every_rank():
    with pytest.raises(RunAborted, match="rank 1 of 2 stopped: RequirementError: no weights"):
        with Peers("RequirementError: no weights").together(RunAborted):
            pass
    own = Peers("ValueError: also broken")
    with pytest.raises(KeyError):  # this rank's own error, as raised
        with own.together(RunAborted):
            raise KeyError("own")
    assert own.sent == ["KeyError: 'own'"]  # and reported to the others, which would otherwise wait for it
    with pytest.raises(RunAborted, match="rank 2 of 3 stopped: OSError: disk full"):  # any rank's error
        with Peers(None, "OSError: disk full").together(RunAborted):
            pass
    with Peers(None).together(RunAborted):
        pass


def test_ranks_that_disagree_on_the_run_stop(tmp_path):
    with pytest.raises(ValueError, match="ranks disagree on the run"):
        RunStores(tmp_path, "k", Peers(("k-with-other-options", 0))).done_ids()
    assert RunStores(tmp_path, "k", Peers(("k", 0))).done_ids() == set()
    with PredictionStore(tmp_path / "k.sqlite") as s:  # this host has stored predictions; the other rank saw none
        s.add([Prediction(f"s{i}", Label.A) for i in range(3)])
    with pytest.raises(ValueError, match=r"rank 0: \(.k., 3\), rank 1: \(.k., 0\)"):
        RunStores(tmp_path, "k", Peers(("k", 0))).done_ids()


def test_ranks_that_disagree_on_the_run_are_one_line_from_the_cli(tmp_path, monkeypatch, capsys):
    """Other data on another host's rank: exit 2 with the views of both ranks, not a traceback."""
    import contextlib

    from pigbench.cli import main as cli_main

    monkeypatch.setattr("pigbench.runner.launched_world", lambda: contextlib.nullcontext(Peers(("other-key", 0))))
    argv = ["run", "--evaluator", "random", "--limit", "4", "--output", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ranks disagree on the run") and "rank 1: ('other-key', 0)" in err
    assert len(err.splitlines()) == 1


def test_every_rank_sets_up_before_the_key_when_another_host_lacks_the_hub_model(tmp_path, monkeypatch):
    """Only rank 0's cache decided: a host whose cache lacked the model made its key without a commit
    (then downloaded it), rank 0's key had the commit, and the run stopped as 'ranks disagree'."""
    import contextlib

    from pigbench.registry import evaluators
    from toy import ToyBrightness

    class UncachedPeer(World):  # rank 0 of 2; rank 1 answers as rank 0 does, but lacks the hub model
        def all_gather(self, obj):
            return [obj, True if isinstance(obj, bool) else obj]

        def broadcast(self, obj):
            return obj  # rank 0's

    hub = tmp_path / "hub"
    (hub / "models--someorg--toy-model" / "snapshots" / ("a" * 40)).mkdir(parents=True)  # cached on this host
    (hub / "models--someorg--toy-model" / "refs").mkdir()
    (hub / "models--someorg--toy-model" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    calls, set_up_at_key = [], []
    evaluators.register("toy-cached-hub-model")(type("CachedHubToy", (ToyBrightness,), {
        "setup": lambda self: calls.append(self), "model_sources": lambda self: ["someorg/toy-model"]}))

    def key(*args):
        set_up_at_key.append(len(calls))
        raise KeyError("stop at the key")

    monkeypatch.setattr("pigbench.runner.launched_world", lambda: contextlib.nullcontext(UncachedPeer(0, 2, 0)))
    monkeypatch.setattr("pigbench.runner.run_key", key)
    with pytest.raises(KeyError, match="stop at the key"):
        run(RunConfig(evaluator="toy-cached-hub-model", dataset="toy", output=str(tmp_path / "results"),
                      cache_dir=str(tmp_path / "cache"), progress=False))
    assert set_up_at_key == [1]  # set up (as rank 1 does, downloading) before the key, once


# sharding ------------------------------------------------------------------------------------------
def episodes(targets_per_user: dict[str, int], refs: int = 2) -> list[Episode]:
    img = ImageRef("x", b"x", known_hash="h")
    pairs = tuple(ReferencePair(f"p{i}", img, img) for i in range(refs))
    return [Episode(u, pairs, Target(f"{u}/{t}", "q", img, img, Label.A))
            for u, n in targets_per_user.items() for t in range(n)]


def test_costs_and_longest_processing_time_assignment():
    eps = episodes({"a": 9, "b": 5, "c": 4, "d": 3, "e": 1}, refs=2)
    costs = user_costs(eps)
    assert costs == {"a": 11, "b": 7, "c": 6, "d": 5, "e": 3}
    owner = assign_users(costs, 2)
    assert owner == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 1}  # loads 16 and 16
    assert assign_users(costs, 2) == owner and set(assign_users(costs, 7).values()) <= set(range(7))


def test_shards_are_disjoint_cover_everything_and_keep_users_and_order_whole():
    eps = episodes({f"u{i}": 1 + (7 * i) % 11 for i in range(23)})
    shards = [shard(eps, World(r, 3)) for r in range(3)]
    assert sorted(e.sample_id for s in shards for e in s) == sorted(e.sample_id for e in eps)
    owners = {e.user_id: r for r, s in enumerate(shards) for e in s}
    assert all(owners[e.user_id] == r for r, s in enumerate(shards) for e in s)
    order = {e.sample_id: i for i, e in enumerate(eps)}
    assert all([order[e.sample_id] for e in s] == sorted(order[e.sample_id] for e in s) for s in shards)
    loads = [sum(user_costs(s).values()) for s in shards]
    assert max(loads) - min(loads) <= max(user_costs(eps).values())
    assert shard(eps, World()) == eps


# stores --------------------------------------------------------------------------------------------
def test_every_rank_sees_all_stores_and_merge_moves_them_into_the_main_store(tmp_path):
    preds = [Prediction("s0", Label.A, 1.5, -2.0, extra={"swap": {"inconsistent": False}}),
             Prediction("s1", Label.INVALID, error="boom"),
             Prediction("s2", Label.B, raw_text="r", dimensions=[Dimension("light", "d", 3.0, 7.5)])]
    with PredictionStore(tmp_path / "k.sqlite") as s:  # rank 0 of an earlier 3-rank run
        s.add(preds[:1])
    for rank, p in ((1, preds[1]), (2, preds[2])):
        with PredictionStore(tmp_path / f"k.rank{rank}.sqlite") as s:
            s.add([p])
    with PredictionStore(tmp_path / "other.rank1.sqlite") as s:  # another run key: never read
        s.add([Prediction("zz", Label.A)])
    stores = RunStores(tmp_path, "k", World())  # resumed with one process
    assert stores.done_ids() == {"s0", "s2"}  # s1 failed: it is predicted again
    assert stores.own_path == tmp_path / "k.sqlite"
    assert RunStores(tmp_path, "k", World(2, 4)).own_path == tmp_path / "k.rank2.sqlite"
    merged = stores.merge()
    assert merged == {p.sample_id: p.to_json() for p in preds}  # byte-for-byte the stored JSON
    assert sorted(p.name for p in tmp_path.glob("k*")) == ["k.sqlite"]
    assert (tmp_path / "other.rank1.sqlite").exists()


def test_merge_moves_this_runs_rank_stores_into_the_main_store(tmp_path):
    """The stores the other ranks wrote during this run (none existed when it started) are in the merge."""
    stores = RunStores(tmp_path, "k", World())
    assert stores.done_ids() == set()
    with stores.open_own() as own:
        own.add([Prediction("s0", Label.A)])
    with PredictionStore(tmp_path / "k.rank1.sqlite") as s:  # rank 1's share
        s.add([Prediction("s1", Label.B)])
    assert {sid: p["label"] for sid, p in stores.merge().items()} == {"s0": "A", "s1": "B"}
    assert sorted(p.name for p in tmp_path.glob("k*")) == ["k.sqlite"]


def test_a_resumed_runs_new_failure_replaces_the_one_an_earlier_rank_stored(tmp_path):
    """A sample that failed on rank 1 of a 2-rank run and fails again in a one-process resume: the
    results show the new error (the old rank store used to overwrite it at the merge)."""
    with PredictionStore(tmp_path / "k.rank1.sqlite") as s:
        s.add([Prediction("s0", Label.INVALID, error="server down"), Prediction("s1", Label.A)])
    stores = RunStores(tmp_path, "k", World())
    assert stores.done_ids() == {"s1"}
    with stores.open_own() as own:
        own.add([Prediction("s0", Label.INVALID, error="image unreadable")])
    merged = stores.merge()
    assert merged["s0"]["error"] == "image unreadable" and merged["s1"]["label"] == "A"
    assert sorted(p.name for p in tmp_path.glob("k*")) == ["k.sqlite"]


def test_a_stored_success_is_never_replaced_by_a_later_failure(tmp_path):
    """The upsert rule of add and absorb: a failure is replaced by any new prediction, a success by none."""
    with PredictionStore(tmp_path / "k.rank1.sqlite") as s:
        s.add([Prediction("s0", Label.INVALID, error="server down"), Prediction("s1", Label.INVALID, error="late")])
    with PredictionStore(tmp_path / "k.sqlite") as main:
        main.add([Prediction("s0", Label.A), Prediction("s1", Label.B)])
        main.add([Prediction("s0", Label.INVALID, error="server down"), Prediction("s2", Label.INVALID, error="x")])
        main.add([Prediction("s2", Label.TIE)])
        main.absorb(tmp_path / "k.rank1.sqlite")
        assert {sid: (p["label"], p.get("error")) for sid, p in main.load().items()} == \
               {"s0": ("A", None), "s1": ("B", None), "s2": ("TIE", None)}


# the runner under torchrun -------------------------------------------------------------------------
def launch(tmp: Path, ranks: int, *args: str) -> list[str]:
    """The CLI, with the toy plug-ins registered, under torchrun with ``ranks`` processes."""
    python = [sys.executable, "-c", "import sys, toy; from pigbench.run import cli; sys.exit(cli())"]
    return [str(TORCHRUN), "--standalone", f"--nproc-per-node={ranks}", "--no-python", *python,
            "--output", str(tmp / "results"), "--cache-dir", str(tmp / "cache"),
            "--no-progress", *args]


ENV = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}


def outputs(results_dir: Path) -> tuple[dict, bytes]:
    (path,) = results_dir.glob("*/*.json")
    assert validate_results(path) == []
    return json.loads(path.read_text()), path.with_name(path.stem + ".predictions.jsonl").read_bytes()


def test_two_ranks_give_the_results_of_one_process(tmp_path):
    pytest.importorskip("torch.distributed")
    common = ["--dataset", "demo", "--dataset-option", "users=6", "--evaluator", "color-reference"]
    single = run(RunConfig(evaluator="color-reference", dataset="demo", dataset_options={"users": "6"},
                           output=str(tmp_path / "one" / "results"), cache_dir=str(tmp_path / "one" / "cache"),
                           progress=False))
    proc = subprocess.run(launch(tmp_path / "two", 2, *common), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results:") == 1  # only rank 0 prints
    assert f"(computed {single.computed}, reused 0)" in proc.stdout and single.computed == 240  # both ranks' shares
    results, jsonl = outputs(tmp_path / "two" / "results")
    _, single_jsonl = outputs(tmp_path / "one" / "results")
    assert jsonl == single_jsonl
    assert results["metrics"] == single.results["metrics"]
    assert results["provenance"]["world_size"] == 2 and single.results["provenance"]["world_size"] == 1
    assert results["evaluator"]["config_hash"] == single.results["evaluator"]["config_hash"]
    assert [p.name for p in (tmp_path / "two" / "cache" / "runs").glob("*.sqlite")] == \
           [p.name for p in (tmp_path / "one" / "cache" / "runs").glob("*.sqlite")]  # same run key, one store


def test_the_full_run_reuses_what_a_limited_two_rank_run_stored(tmp_path):
    """The run key holds the split before --limit: after a limited run under torchrun (rank stores
    merged into one store), the full run predicts only the targets after the limit."""
    pytest.importorskip("torch.distributed")
    common = ["--dataset", "demo", "--dataset-option", "users=6", "--evaluator", "color-reference"]
    proc = subprocess.run(launch(tmp_path, 2, *common, "--limit", "50"), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(computed 50, reused 0)" in proc.stdout  # 2 users, one per rank
    (store,) = (tmp_path / "cache" / "runs").glob("*.sqlite")
    assert ".rank" not in store.name
    full = run(RunConfig(evaluator="color-reference", dataset="demo", dataset_options={"users": "6"},
                         output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), progress=False))
    assert (full.resumed, full.computed) == (50, 190)
    assert [p.name for p in (tmp_path / "cache" / "runs").glob("*.sqlite")] == [store.name]


def test_a_calibrated_two_rank_run_says_its_tie_threshold_once(tmp_path):
    """Every rank calibrates (the same seeded held-out users, the same tau), but each printed the line."""
    pytest.importorskip("torch.distributed")
    proc = subprocess.run(launch(tmp_path, 2, "--dataset", "demo", "--dataset-option", "users=6", "--evaluator",
                                 "color-reference", "--calibrate-tie-threshold", "0.5"),
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("tie threshold calibrated on") == 1


def stored(runs: Path) -> dict[str, int]:
    counts = {}
    for db in runs.glob("*.sqlite"):
        try:
            counts[db.name] = sqlite3.connect(db).execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            counts[db.name] = 0
    return counts


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (Linux /proc); torchrun starts ranks in their own sessions."""
    out = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split()):
            out += [child, *descendants(child)]
    return out


def toy_config(tmp: Path, **kw) -> RunConfig:
    """The config of :func:`launch`'s toy runs below."""
    return RunConfig(evaluator="toy-brightness", dataset="toy", dataset_options={"users": "40"}, batch_size=2,
                     output=str(tmp / "results"), cache_dir=str(tmp / "cache"), progress=False, **kw)


def test_kill_two_ranks_then_resume_with_three_ranks_or_one_process(tmp_path):
    pytest.importorskip("torch.distributed")
    args = ["--dataset", "toy", "--evaluator", "toy-brightness", "--dataset-option", "users=40", "--batch-size", "2",
            *SLOW]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(launch(killed, 2, *args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    counts: dict[str, int] = {}
    while time.time() < deadline and proc.poll() is None:
        counts = stored(killed / "cache" / "runs")
        if len(counts) == 2 and min(counts.values()) >= 6:  # both ranks have committed some batches
            break
        time.sleep(0.1)
    for pid in [proc.pid, *descendants(proc.pid)]:  # torchrun's agent and its ranks, as a node failure would
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert len(counts) == 2 and min(counts.values()) >= 6, (counts, proc.stderr.read()[-3000:])
    partial = sum(stored(killed / "cache" / "runs").values())
    assert partial < 200  # 40 users x 5 targets: killed midway
    assert any(".rank1." in name for name in counts)

    one = tmp_path / "one"
    shutil.copytree(killed, one)
    three = subprocess.run(launch(killed, 3, *args), env=ENV, capture_output=True, text=True, timeout=300)
    assert three.returncode == 0, three.stderr[-3000:]
    assert f"resuming: {partial} of 200" in three.stderr
    assert f"(computed {200 - partial}, reused {partial})" in three.stdout
    logged: list[str] = []
    run(toy_config(one, options={"sleep": "0.1"}), log=logged.append)  # one process, in this one
    assert any(f"resuming: {partial} of 200" in line for line in logged)

    clean = run(toy_config(tmp_path / "clean"))  # not slowed: another config hash, the same predictions
    clean_jsonl = clean.results_path.with_name(clean.results_path.stem + ".predictions.jsonl").read_bytes()
    for tree in (killed, one):
        results, jsonl = outputs(tree / "results")
        assert jsonl == clean_jsonl
        assert metric_differences(results["metrics"], clean.results["metrics"]) == []
        assert results["provenance"]["resumed_samples"] == partial
        assert list(stored(tree / "cache" / "runs").values()) == [200]  # merged into one store


def test_a_sweep_under_torchrun_runs_every_size_in_one_process_group(tmp_path):
    """Each size is a run of the same launch: re-joining the rendezvous for the next size used to crash or hang
    (a race: most launches of 3 sizes failed)."""
    pytest.importorskip("torch.distributed")
    from pigbench.sweep import sweep

    python = [sys.executable, "-c", "import sys, toy; from pigbench.cli import main; sys.exit(main())"]
    two = tmp_path / "two"
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node=2", "--no-python", *python, "sweep",
                           "--dataset", "toy", "--evaluator", "toy-brightness", "--reference-sizes", "1,2,3",
                           "--output", str(two / "results"), "--cache-dir", str(two / "cache"), "--no-progress"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("toy-brightness__k3.json") == 1 and proc.stderr.count("reference size 3") == 1  # rank 0's
    single = sweep(RunConfig(evaluator="toy-brightness", dataset="toy", output=str(tmp_path / "one" / "results"),
                             cache_dir=str(tmp_path / "one" / "cache"), progress=False), [1, 2, 3], log=lambda m: None)
    for k, outcome in single.items():
        path = two / "results" / "toy" / f"toy-brightness__k{k}.predictions.jsonl"
        assert path.read_bytes() == outcome.results_path.with_name(path.name).read_bytes()


def test_two_ranks_sharing_a_pickapic_image_store_equal_one_process(tmp_path):
    """Under torchrun every rank runs the hashing pass and writes the same image files and index into
    the shared images_cache at once: the results equal a one-process run's, and the store holds the same
    whole files (each named by its SHA-256), the same index and no temporary file."""
    pytest.importorskip("torch.distributed")
    import hashlib

    from fixtures_adapters import PROMPTS, pickapic_row, write_pickapic
    from pigbench.adapters.pickapic import ImageStore

    rows, n = [], 1
    for u, user in enumerate(range(201, 205)):
        for i in range(10):  # a tie per user; user 202 shows an image of user 201 again: two rows store one file
            rows.append(pickapic_row(7000 + 10 * u + i, user, PROMPTS[i], 3 if (user, i) == (202, 6) else n, n + 1,
                                     0.5 if i == 2 else float((i + u) % 2)))
            n += 2
    write_pickapic(tmp_path / "meta", rows, images=False, shards=2, row_group_size=16)
    write_pickapic(tmp_path / "images", rows, images=True, shards=3, row_group_size=4)
    options = {"images_path": str(tmp_path / "images"), "images_cache": str(tmp_path / "one" / "store")}
    single = run(RunConfig(evaluator="color-reference", dataset="pickapic", dataset_path=str(tmp_path / "meta"),
                           dataset_options=options, output=str(tmp_path / "one" / "results"),
                           cache_dir=str(tmp_path / "one" / "cache"), progress=False), log=lambda m: None)
    proc = subprocess.run(launch(tmp_path / "two", 2, "--dataset", "pickapic", "--dataset-path", str(tmp_path / "meta"),
                                 "--dataset-option", f"images_path={tmp_path / 'images'}", "--dataset-option",
                                 f"images_cache={tmp_path / 'two' / 'store'}", "--evaluator", "color-reference"),
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, jsonl = outputs(tmp_path / "two" / "results")
    _, single_jsonl = outputs(tmp_path / "one" / "results")
    assert jsonl == single_jsonl and results["metrics"] == single.results["metrics"] and single.computed > 0

    def contents(store: Path) -> tuple[dict, dict]:
        (index,) = store.glob("index-*.json")  # beside it its lock file (and a log of additions since its last write)
        files = {p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*")
                 if p.is_file() and not p.name.startswith("index-")}
        return ImageStore(store).load_index(index), {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}

    index, images = contents(tmp_path / "two" / "store")
    assert all(name == f"{sha[:2]}/{sha}" for name, sha in images.items())  # whole files only, no temporary one
    assert (index, images) == contents(tmp_path / "one" / "store") and len(index) == len(rows)
    assert len(images) == 2 * len(rows) - 1
