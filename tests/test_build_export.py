"""`pigbench build export`: PIGBench-format files, the datasheet's agreement figures, and a run on the result."""

import hashlib
import json
import random

import pytest

from build_fixtures import ColorPipeline, workspace_with_sets, wsgi_call
from pigbench.adapters.pigbench_format import PIGBenchFormat
from pigbench.build.agreement import kendall_tau_b, kendalls_w, pairwise_disagreement, set_agreement
from pigbench.build.annotate.app import make_annotate_app
from pigbench.build.annotate.store import AnnotationStore
from pigbench.build.export import export_dataset
from pigbench.build.render import RenderSettings, pending_jobs, render_jobs
from pigbench.build.sets import kept_sets, record_decision
from pigbench.cli import main as cli
from pigbench.runner import RunConfig, run


def test_kendalls_w_extremes_and_a_tied_example():
    assert kendalls_w([[1, 2, 3, 4]] * 3) == pytest.approx(1.0)
    assert kendalls_w([[1, 2, 3, 4], [4, 3, 2, 1]]) == pytest.approx(0.0)
    # mid-ranks (1.5, 1.5, 3, 4) and (1, 2, 3, 4): S = 18.5, ties T = 6, W = 12 S / (4 * 60 - 2 * 6)
    assert kendalls_w([[1, 1, 3, 4], [1, 2, 3, 4]]) == pytest.approx(12 * 18.5 / 228)
    assert kendalls_w([[1, 2, 3, 4]]) is None and kendalls_w([[1, 1, 1, 1]] * 2) is None


def test_w_matches_mean_spearman_and_tau_b_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(20):
        m = rng.randint(2, 6)
        rankings = [rng.sample([1, 2, 3, 4], 4) for _ in range(m)]
        rhos = [stats.spearmanr(a, b)[0] for i, a in enumerate(rankings) for b in rankings[i + 1:]]
        assert kendalls_w(rankings) == pytest.approx((1 + (m - 1) * sum(rhos) / len(rhos)) / m)
    for a, b in ([1, 1, 3, 4], [2, 1, 3, 3]), ([1, 2, 2, 4], [4, 3, 2, 1]), ([1, 2, 3, 4], [1, 1, 1, 4]):
        assert kendall_tau_b(a, b) == pytest.approx(stats.kendalltau(a, b)[0])
    assert pairwise_disagreement([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(1 / 6)
    assert set_agreement([[1, 2, 3, 4], [4, 3, 2, 1]])["mean_tau_b"] == pytest.approx(-1.0)


def annotated_workspace(root, rankings_by_user):
    """8 rendered sets (7 kept); each user signs in (3 sets) and submits their scripted screen rankings."""
    ws = workspace_with_sets(root, 8, keep=7)
    store = AnnotationStore(ws.annotate_db)
    store.initialize(3, 3, seed=0, open_signup=True)
    store.sync_sets(kept_sets(ws))
    for user, screen_rankings in rankings_by_user.items():
        store.sign_in(user)
        for assignment, ranks in zip(store.assignments(user), screen_rankings):
            store.submit(user, assignment.set_id, ranks)
    return ws, store


USERS = {f"u{i}": [[1, 2, 3, 4], [2, 1, 3, 3], [1, 1, 3, 4]] if i % 2 else [[4, 3, 2, 1], [1, 2, 3, 4], [1, 2, 2, 4]]
         for i in range(5)}
USERS["u5"] = [[1, 2, 3, 4]]  # one ranked set: exported, but too few to split


def test_export_writes_the_pigbench_format_and_a_datasheet(tmp_path):
    ws, store = annotated_workspace(tmp_path / "ws", USERS)
    out = tmp_path / "dataset"
    sheet = export_dataset(ws, out)
    instances = [json.loads(line) for line in (out / "instances.jsonl").read_text().splitlines()]
    rankings = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    ranked = {r["set_id"] for r in store.all_rankings()}
    assert {i["instance_id"] for i in instances} == ranked and len(rankings) == 16
    for inst in instances:
        s = next(s for s in kept_sets(ws) if s.set_id == inst["instance_id"])
        assert inst["prompts"] == list(s.prompts) and inst["seeds"] == [r["seed"] for r in s.renders]
        assert inst["generator"] == "test/color-pipeline" and inst["challenge"] == "Simple Detail"
        assert [(out / p).read_bytes() for p in inst["images"]] == [(ws.root / p).read_bytes() for p in s.images]
    by_key = {(r["annotator_id"], r["set_id"]): r["ranks"] for r in store.all_rankings()}
    assert all(r["ranks"] == by_key[(r["user_id"], r["instance_id"])] for r in rankings)  # variant order

    log = [json.loads(line) for line in (out / "annotation_log.jsonl").read_text().splitlines()]
    assert len(log) == 16 and all(sorted(e["display_order"]) == [0, 1, 2, 3] for e in log)
    assert len((out / "generation.jsonl").read_text().splitlines()) == 4 * len(instances)
    counts = sheet["counts"]
    assert (counts["users"], counts["rankings"], counts["users_with_at_least_2_sets"]) == (6, 16, 5)
    assert counts["rankings_with_ties"] == sum(len(set(r["ranks"])) < 4 for r in rankings)
    assert sum(c["instances"] for c in sheet["category_balance"]) == len(instances)
    for row in sheet["agreement"]["per_instance"]:
        ranks = [r["ranks"] for r in rankings if r["instance_id"] == row["instance_id"]]
        assert row["annotators"] == len(ranks) and row["kendalls_w"] == kendalls_w(ranks)
    assert sheet["review"] == {"rendered_sets": 8, "kept": 7, "dropped": 1,
                               "drop_reasons": {"variants too similar to split preferences": 1}}
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "## Datasheet" in card and "Kendall's W" in card
    assert json.loads((out / "datasheet.json").read_text()) == json.loads(json.dumps(sheet))

    before = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    export_dataset(ws, out)  # again: same files, images not copied again
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == before


def test_export_loads_through_the_adapter_and_runs(tmp_path):
    ws, store = annotated_workspace(tmp_path / "ws", USERS)
    out = tmp_path / "dataset"
    assert cli(["build", "--workdir", str(ws.root), "export", "--out", str(out)]) == 0
    adapter = PIGBenchFormat(str(out))
    records = list(adapter.records())
    assert len(records) == 16 and not adapter.skipped
    split = adapter.split(seed=0, reference_size=None)
    assert {e.user_id for e in split.episodes} == {f"u{i}" for i in range(5)}  # u5 has one set: skipped
    assert all(len(e.references) == 2 for e in split.episodes) and len(split.episodes) == 5 * 6
    outcome = run(RunConfig(evaluator="color-reference", dataset="pigbench", dataset_path=str(out),
                            output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), progress=False),
                  log=lambda message: None)
    assert outcome.computed == 30
    assert outcome.results_path.is_file()


def test_export_needs_rankings(tmp_path, capsys):
    ws = workspace_with_sets(tmp_path / "ws", 2)
    work = ["build", "--workdir", str(ws.root), "export", "--out", str(tmp_path / "out")]
    assert cli(work) == 2 and "annotate init" in capsys.readouterr().err
    AnnotationStore(ws.annotate_db).initialize(1, 1, 0, False)
    assert cli(work) == 2 and "no kept set" in capsys.readouterr().err


def test_export_refuses_a_file_or_the_workspace_as_out(tmp_path, capsys):
    """A file used to end in a FileExistsError traceback; the workspace itself was filled with the
    dataset's files beside annotate.sqlite and the other workspace files."""
    ws = workspace_with_sets(tmp_path / "ws", 2)
    AnnotationStore(ws.annotate_db).initialize(1, 1, 0, False)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    for out, message in ((blocker, f"--out {blocker} is a file; a dataset folder is expected"),
                         (ws.root, f"--out {ws.root} is the build workspace; export to a folder of its own (the "
                                   "workspace holds annotate.sqlite, which is not for publishing)")):
        assert cli(["build", "--workdir", str(ws.root), "export", "--out", str(out), "--include-unranked"]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not (ws.root / "instances.jsonl").exists()


def test_export_refuses_an_image_that_does_not_match_its_render_record(tmp_path, capsys):
    ws = workspace_with_sets(tmp_path / "ws", 2)
    AnnotationStore(ws.annotate_db).initialize(1, 1, 0, False)
    image = ws.root / kept_sets(ws)[1].images[2]
    intact = image.read_bytes()
    image.write_bytes(intact[:50])
    out = tmp_path / "out"
    work = ["build", "--workdir", str(ws.root), "export", "--out", str(out), "--include-unranked"]
    assert cli(work) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(image) in err and "does not match" in err and "build render" in err
    assert hashlib.sha256(intact[:50]).hexdigest() in err and hashlib.sha256(intact).hexdigest() in err
    assert not out.exists()  # nothing written, not even the images that match
    settings = RenderSettings(model="test/color-pipeline", steps=1, width=64, height=64, dtype="float32")
    jobs = pending_jobs(ws, settings)
    assert [(j.relpath, j.redo) for j in jobs] == [(str(image.relative_to(ws.root)), True)]
    list(render_jobs(ColorPipeline(), jobs, settings, ws))
    assert cli(work) == 0
    assert (out / "images" / kept_sets(ws)[1].set_id / "2.png").read_bytes() == intact


def test_a_set_expanded_again_after_rendering_is_refused_then_rendered_again(tmp_path, capsys):
    ws = workspace_with_sets(tmp_path / "ws", 2)
    AnnotationStore(ws.annotate_db).initialize(1, 1, 0, False)
    old = ws.variants.read_text(encoding="utf-8")
    ws.variants.write_text(old.replace("scene 2", "at night"), encoding="utf-8")  # the curator expanded again
    s = kept_sets(ws)[0]
    out = tmp_path / "out"
    work = ["build", "--workdir", str(ws.root), "export", "--out", str(out), "--include-unranked"]
    assert cli(work) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was rendered from" in err and repr(s.prompts[2]) in err
    assert not out.exists()  # no instance claims an image came from a prompt it was not rendered from
    settings = RenderSettings(model="test/color-pipeline", steps=1, width=64, height=64, dtype="float32")
    jobs = pending_jobs(ws, settings)
    assert sorted((j.set_id, j.index, j.redo) for j in jobs) == sorted((x.set_id, 2, True) for x in kept_sets(ws))
    list(render_jobs(ColorPipeline(), jobs, settings, ws))
    assert cli(work) == 0
    instance = json.loads((out / "instances.jsonl").read_text().splitlines()[0])
    assert instance["prompts"][2] == s.prompts[2] and "at night" in s.prompts[2]


def test_export_refuses_a_kept_ranked_set_whose_image_file_is_missing(tmp_path, capsys):
    ws, store = annotated_workspace(tmp_path / "ws", USERS)
    ranked = {r["set_id"] for r in store.all_rankings()}
    s = next(s for s in kept_sets(ws) if s.set_id in ranked)
    (ws.root / s.images[2]).unlink()
    out = tmp_path / "out"
    work = ["build", "--workdir", str(ws.root), "export", "--out", str(out)]
    assert cli(work) == 2  # the set and its rankings were left out, with exit 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and s.set_id in err and "build render" in err
    assert not out.exists()
    settings = RenderSettings(model="test/color-pipeline", steps=1, width=64, height=64, dtype="float32")
    list(render_jobs(ColorPipeline(), pending_jobs(ws, settings), settings, ws))
    assert cli(work) == 0
    exported = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    assert len(exported) == len(store.all_rankings()) and s.set_id in {r["instance_id"] for r in exported}


def test_ranks_given_on_screen_reach_the_images_they_were_given_to(tmp_path):
    """Two annotators rank the four images they are shown, slot by slot, by a taste on image content; loaded back
    through the adapter, every exported image has the rank its content got on screen. Serving screen slot k the
    image of variant k instead of variant display_order[k] (every rank attached to another image) passed."""
    ws = workspace_with_sets(tmp_path / "ws", 4)
    store = AnnotationStore(ws.annotate_db)
    store.initialize(3, 3, seed=0, open_signup=True)
    store.sync_sets(kept_sets(ws))
    app = make_annotate_app(store, ws.root)
    given = {}  # (user, set id, image sha256) -> rank given on screen
    for user, worst_first in (("ann", False), ("bob", True)):
        cookie = f"pb_session={store.sign_in(user)}"
        for a in store.assignments(user):
            shown = [hashlib.sha256(wsgi_call(app, "GET", f"/img/{a.set_id}/{slot}", cookie=cookie)[2]).hexdigest()
                     for slot in range(4)]
            taste = sorted(shown, reverse=worst_first)
            screen = [1 + taste.index(h) for h in shown]
            body = json.dumps({"set_id": a.set_id, "ranks": screen}).encode()
            assert wsgi_call(app, "POST", "/api/rankings", body, cookie=cookie)[0] == 200
            given.update({(user, a.set_id, h): r for h, r in zip(shown, screen)})
    out = tmp_path / "dataset"
    export_dataset(ws, out)
    adapter = PIGBenchFormat(str(out))
    records = list(adapter.records())
    assert not adapter.skipped and len(records) == 6
    assert sorted((r.user_id, r.record_id) for r in records) == sorted({(u, s) for u, s, _ in given})
    for r in records:
        hashes = [hashlib.sha256((out / ref.id).read_bytes()).hexdigest() for ref in r.images]
        assert len(set(hashes)) == 4 and r.ranks == tuple(given[(r.user_id, r.record_id, h)] for h in hashes)


def read_jsonl_file(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_side_files_and_datasheet_figures_are_exact(tmp_path):
    """generation.jsonl, annotation_log.jsonl, annotators per instance and the same-best-image share were checked
    by count or not at all: a prompt or render record of another index in generation.jsonl, ranks by variant
    written as the screen ranks in the log, and a wrong annotator count or top choice in the datasheet passed."""
    ws, store = annotated_workspace(tmp_path / "ws", USERS)
    out = tmp_path / "dataset"
    sheet = export_dataset(ws, out)
    instances = {i["instance_id"]: i for i in read_jsonl_file(out / "instances.jsonl")}
    generation = read_jsonl_file(out / "generation.jsonl")
    assert [(g["instance_id"], g["index"]) for g in generation] == [(iid, i) for iid in instances for i in range(4)]
    for g in generation:
        inst, i = instances[g["instance_id"]], g["index"]
        assert (g["prompt"], g["image"], g["seed"]) == (inst["prompts"][i], inst["images"][i], inst["seeds"][i])
        assert g["sha256"] == hashlib.sha256((out / g["image"]).read_bytes()).hexdigest()

    rankings, log = read_jsonl_file(out / "rankings.jsonl"), read_jsonl_file(out / "annotation_log.jsonl")
    assert [(e["user_id"], e["instance_id"]) for e in log] == [(r["user_id"], r["instance_id"]) for r in rankings]
    scripted = {(user, a.set_id): screen for user, screens in USERS.items()
                for a, screen in zip(store.assignments(user), screens)}
    for e, r in zip(log, rankings):
        assert e["screen_ranks"] == scripted[(e["user_id"], e["instance_id"])]
        assert [r["ranks"][variant] for variant in e["display_order"]] == e["screen_ranks"]

    by_instance = {iid: [r["ranks"] for r in rankings if r["instance_id"] == iid] for iid in instances}
    per_instance = sorted(len(v) for v in by_instance.values())
    summary = sheet["counts"]["annotators_per_instance"]
    assert (summary["n"], summary["min"], summary["max"]) == (len(instances), per_instance[0], per_instance[-1])
    assert summary["mean"] == pytest.approx(sum(per_instance) / len(per_instance))
    pairs = [(a, b) for v in by_instance.values() for j, a in enumerate(v) for b in v[j + 1:]]
    same_top = [{k for k, x in enumerate(a) if x == 1} == {k for k, x in enumerate(b) if x == 1} for a, b in pairs]
    assert sheet["divergence"]["user_pairs_on_shared_instances"] == len(pairs) > 0
    assert sheet["divergence"]["same_top_choice"] == pytest.approx(sum(same_top) / len(pairs))
    assert 0 < sheet["divergence"]["same_top_choice"] < 1


def test_a_set_dropped_after_it_was_ranked_leaves_with_its_rankings(tmp_path):
    """A curator may drop a set after annotators ranked it; its rankings must not be exported (the adapter would
    skip them as rankings of an unknown instance) nor counted as exported, but as skipped under their own reason
    (they were left out silently). Keeping them passed every test."""
    ws, store = annotated_workspace(tmp_path / "ws", USERS)
    dropped = store.all_rankings()[0]["set_id"]
    record_decision(ws, dropped, "drop", "a watermark in image 2")
    out = tmp_path / "dataset"
    sheet = export_dataset(ws, out)
    expected = [(r["annotator_id"], r["set_id"], r["ranks"]) for r in store.all_rankings() if r["set_id"] != dropped]
    assert len(expected) < len(store.all_rankings())
    assert [(r["user_id"], r["instance_id"], r["ranks"]) for r in read_jsonl_file(out / "rankings.jsonl")] == expected
    assert [(e["user_id"], e["instance_id"]) for e in read_jsonl_file(out / "annotation_log.jsonl")] == [
        (u, s) for u, s, _ in expected]
    assert sheet["counts"]["rankings"] == len(expected)
    assert sheet["counts"]["rankings_skipped"] == {"set dropped in review after the ranking":
                                                   len(store.all_rankings()) - len(expected)}
    adapter = PIGBenchFormat(str(out))
    records = list(adapter.records())
    assert not adapter.skipped
    assert sorted((r.user_id, r.record_id, list(r.ranks)) for r in records) == sorted(expected)


def test_exporting_again_after_a_set_is_rendered_again_replaces_its_images(tmp_path):
    """Export copies only changed images; an image kept because its file merely existed (not because it matched
    the render record) left the first render under the new prompt. That passed: no test exported twice around a
    render."""
    ws = workspace_with_sets(tmp_path / "ws", 2)
    AnnotationStore(ws.annotate_db).initialize(1, 1, 0, False)
    out = tmp_path / "out"
    work = ["build", "--workdir", str(ws.root), "export", "--out", str(out), "--include-unranked"]
    assert cli(work) == 0
    ws.variants.write_text(ws.variants.read_text(encoding="utf-8").replace("scene 2", "at night"), encoding="utf-8")
    settings = RenderSettings(model="test/color-pipeline", steps=1, width=64, height=64, dtype="float32")
    list(render_jobs(ColorPipeline(), pending_jobs(ws, settings), settings, ws))
    assert cli(work) == 0
    sets = {s.set_id: s for s in kept_sets(ws)}
    instances = read_jsonl_file(out / "instances.jsonl")
    assert sorted(i["instance_id"] for i in instances) == sorted(sets)
    for inst in instances:
        s = sets[inst["instance_id"]]
        assert inst["prompts"] == list(s.prompts) and "at night" in inst["prompts"][2]
        assert [(out / p).read_bytes() for p in inst["images"]] == [(ws.root / p).read_bytes() for p in s.images]
    adapter = PIGBenchFormat(str(out))
    assert list(adapter.records()) == [] and not adapter.skipped


def test_exporting_again_after_a_set_is_dropped_removes_its_images_and_nothing_else(tmp_path, capsys):
    """Exporting into the same --out after a ranked set was dropped left images/<set>/ behind: files no instance
    named, still counted in the dataset's size. Only images an earlier export listed in generation.jsonl go."""
    ws, store = annotated_workspace(tmp_path / "ws", USERS)
    out = tmp_path / "dataset"
    export_dataset(ws, out)
    dropped = store.all_rankings()[0]["set_id"]
    assert len(list((out / "images" / dropped).glob("*.png"))) == 4
    own = out / "images" / "notes.txt"
    own.write_text("the curator's")
    (out / "images" / dropped / "extra.png").write_bytes(b"not written by export")
    record_decision(ws, dropped, "drop", "a watermark in image 2")
    capsys.readouterr()
    export_dataset(ws, out)
    err = capsys.readouterr().err
    assert sorted(p.name for p in (out / "images" / dropped).iterdir()) == ["extra.png"]
    assert err.count("removed") == 4 and all(str(out / "images" / dropped / f"{i}.png") in err for i in range(4))
    assert own.read_text() == "the curator's"
    named = {p for inst in read_jsonl_file(out / "instances.jsonl") for p in inst["images"]}
    on_disk = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*.png")}
    assert on_disk - named == {f"images/{dropped}/extra.png"} and named <= on_disk
    second = store.all_rankings()[-1]["set_id"]
    record_decision(ws, second, "drop", "a watermark in image 3")
    export_dataset(ws, out)  # its folder, emptied, goes too; nothing of the first drop is reported again
    assert not (out / "images" / second).exists() and capsys.readouterr().err.count("removed") == 4


def rank_through_the_app(ws, users):
    """Each user signs in to the annotation app and ranks every assigned set [1, 2, 3, 4] on screen."""
    store = AnnotationStore(ws.annotate_db)
    app = make_annotate_app(store, ws.root)
    for user in users:
        cookie = f"pb_session={store.sign_in(user)}"
        for a in store.assignments(user):
            body = json.dumps({"set_id": a.set_id, "ranks": [1, 2, 3, 4]}).encode()
            assert wsgi_call(app, "POST", "/api/rankings", body, cookie=cookie)[0] == 200
    return store


def test_rankings_of_a_set_rendered_again_since_are_skipped_and_counted(tmp_path, capsys):
    """A set rendered again after it was ranked (new images at the same paths) had its rankings exported with the
    new images: rankings of images the annotators never saw. They are now skipped and counted."""
    ws = workspace_with_sets(tmp_path / "ws", 4)
    AnnotationStore(ws.annotate_db).initialize(2, 2, seed=0, open_signup=True)
    AnnotationStore(ws.annotate_db).sync_sets(kept_sets(ws))
    store = rank_through_the_app(ws, ["ann", "bob", "cy"])
    before = store.all_rankings()
    renders = {s.set_id: [r["sha256"] for r in s.renders] for s in kept_sets(ws)}
    assert all(r["images_sha256"] == renders[r["set_id"]] for r in before)
    again = before[0]["set_id"]
    variants = read_jsonl_file(ws.variants)
    next(v for v in variants if v["set_id"] == again)["variants"][1] += ", at night"  # the curator expanded it again
    ws.variants.write_text("".join(json.dumps(v) + "\n" for v in variants), encoding="utf-8")
    settings = RenderSettings(model="test/color-pipeline", steps=1, width=64, height=64, dtype="float32")
    assert [(j.set_id, j.index) for j in pending_jobs(ws, settings)] == [(again, 1)]
    list(render_jobs(ColorPipeline(), pending_jobs(ws, settings), settings, ws))
    out = tmp_path / "dataset"
    assert cli(["build", "--workdir", str(ws.root), "export", "--out", str(out), "--include-unranked"]) == 0
    stale = [r for r in before if r["set_id"] == again]
    assert capsys.readouterr().out.count(f"skipped {len(stale)} ranking(s): images rendered again") == 1
    exported = [(r["user_id"], r["instance_id"]) for r in read_jsonl_file(out / "rankings.jsonl")]
    assert exported == [(r["annotator_id"], r["set_id"]) for r in before if r["set_id"] != again]
    sheet = json.loads((out / "datasheet.json").read_text())
    assert sheet["counts"]["rankings_skipped"] == {"images rendered again after the ranking": len(stale)}
    assert sheet["counts"]["rankings"] == len(before) - len(stale) and sheet["counts"]["rankings_unchecked"] == 0
    assert f"Rankings skipped, not exported: {len(stale)}" in (out / "README.md").read_text()


def test_rankings_of_an_older_database_without_image_hashes_are_exported_unchecked(tmp_path):
    """An annotate.sqlite written before rankings recorded their images still exports (unchecked, counted), and the
    app records the hashes of rankings submitted to it from then on."""
    import sqlite3

    ws = workspace_with_sets(tmp_path / "ws", 4)
    store = AnnotationStore(ws.annotate_db)
    store.initialize(2, 2, seed=0, open_signup=True)
    store.sync_sets(kept_sets(ws))
    store.sign_in("old")
    for a in store.assignments("old"):
        store.submit("old", a.set_id, [1, 2, 3, 4])
    with sqlite3.connect(ws.annotate_db) as conn:
        conn.execute("ALTER TABLE rankings DROP COLUMN images_sha256")  # the table as an older version made it
    assert [r["images_sha256"] for r in store.all_rankings()] == [None, None]
    sheet = export_dataset(ws, tmp_path / "dataset")
    assert (sheet["counts"]["rankings"], sheet["counts"]["rankings_unchecked"]) == (2, 2)
    rank_through_the_app(ws, ["new"])
    renders = {s.set_id: [r["sha256"] for r in s.renders] for s in kept_sets(ws)}
    assert [r["images_sha256"] == renders[r["set_id"]] for r in store.all_rankings() if r["annotator_id"] == "new"
            ] == [True, True]
    assert export_dataset(ws, tmp_path / "dataset")["counts"]["rankings_unchecked"] == 2
