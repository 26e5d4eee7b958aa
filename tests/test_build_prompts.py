"""`pigbench build prompts`: reading PartiPrompts with QUOTE_NONE and stratified, seeded selection."""

from collections import Counter
from pathlib import Path

import pytest

from pigbench.adapter import DatasetError
from pigbench.build.prompts import allocate, read_partiprompts, select_prompts, set_id_for
from pigbench.build.workspace import read_jsonl
from pigbench.cli import main as cli

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "PartiPrompts.tsv"
SIMPLE_DETAIL_BY_CATEGORY = {"Artifacts": 52, "Animals": 45, "People": 28, "Outdoor Scenes": 26, "Food & Beverage": 20,
                             "World Knowledge": 16, "Vehicles": 13, "Produce & Plants": 12, "Illustrations": 10,
                             "Indoor Scenes": 10}


def test_packaged_subset_is_the_simple_detail_challenge():
    rows = read_partiprompts()
    assert len(rows) == 232
    assert {r.challenge for r in rows} == {"Simple Detail"}
    assert Counter(r.category for r in rows) == SIMPLE_DETAIL_BY_CATEGORY
    assert any(r.prompt == "A red hydrant on the grass" and r.note == "VQ-Diffusion" for r in rows)


def test_leading_quote_survives_quote_none(tmp_path):
    tsv = tmp_path / "parti.tsv"
    tsv.write_text('Prompt\tCategory\tChallenge\tNote\n"G I G G L E" painted on a wall.\tArtifacts\tSimple Detail\t\n'
                   "Crème brûlée\tFood & Beverage\tSimple Detail\t\n", encoding="utf-8")
    rows = read_partiprompts(tsv)
    assert rows[0].prompt == '"G I G G L E" painted on a wall.' and rows[0].note == ""
    assert rows[1].prompt == "Crème brûlée"


@pytest.mark.skipif(not SHARED.is_file(), reason=f"real PartiPrompts.tsv not at {SHARED}")
def test_real_file_reads_every_row_and_the_quoted_prompt():
    rows = read_partiprompts(SHARED)
    assert len(rows) == 1632
    assert sum(r.challenge == "Simple Detail" for r in rows) == 232
    assert any(r.prompt.startswith('"G I G G L E"') for r in rows)


def test_malformed_rows_name_the_file_and_row(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("Prompt\tCategory\tChallenge\tNote\na cat\tAnimals\tSimple Detail\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.tsv: data row 1 has 3 fields"):
        read_partiprompts(bad)
    bad.write_text("Text\tCategory\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="header"):
        read_partiprompts(bad)
    with pytest.raises(DatasetError, match="--partiprompts"):
        read_partiprompts(tmp_path / "missing.tsv")


def test_allocation_is_proportional_with_one_per_category():
    for n in range(1, 233):
        alloc = allocate(SIMPLE_DETAIL_BY_CATEGORY, n)
        assert sum(alloc.values()) == n
        for cat, size in SIMPLE_DETAIL_BY_CATEGORY.items():
            quota = n * size / 232
            assert alloc[cat] <= size
            assert alloc[cat] >= (1 if n >= 10 else 0)
            assert abs(alloc[cat] - quota) < 2, (n, cat, alloc[cat], quota)
    with pytest.raises(DatasetError, match="only 232"):
        allocate(SIMPLE_DETAIL_BY_CATEGORY, 233)


def test_selection_is_stratified_seeded_and_unique():
    rows = read_partiprompts()
    first, again, other = (select_prompts(rows, 100, seed) for seed in (0, 0, 1))
    assert first == again and first != other
    assert Counter(r.category for r in first) == allocate(SIMPLE_DETAIL_BY_CATEGORY, 100)
    assert len({set_id_for(r.prompt, r.category) for r in first}) == 100
    assert [r.row for r in first] == sorted(r.row for r in first)


def test_cli_records_category_and_challenge_and_resumes(tmp_path, capsys):
    work = str(tmp_path / "ws")
    assert cli(["build", "--workdir", work, "prompts", "-n", "12", "--seed", "3"]) == 0
    rows = read_jsonl(tmp_path / "ws" / "prompts.jsonl")
    assert len(rows) == 12 and len(Counter(r["category"] for r in rows)) == 10
    assert all(r["challenge"] == "Simple Detail" and r["set_id"] == set_id_for(r["base_prompt"], r["category"])
               for r in rows)
    assert cli(["build", "prompts", "--workdir", work, "-n", "12", "--seed", "3"]) == 0
    assert "already selected" in capsys.readouterr().out
    assert read_jsonl(tmp_path / "ws" / "prompts.jsonl") == rows
    assert cli(["build", "--workdir", work, "prompts", "-n", "20"]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli(["build", "--workdir", work, "prompts", "-n", "20", "--force"]) == 0
    assert len(read_jsonl(tmp_path / "ws" / "prompts.jsonl")) == 20


def test_a_workdir_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    """It used to end in a FileExistsError traceback from mkdir."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    assert cli(["build", "--workdir", str(blocker), "prompts", "-n", "5"]) == 2
    assert capsys.readouterr().err == f"error: --workdir {blocker} is a file; a build workspace directory is expected\n"
    assert blocker.read_text() == "keep me"


def test_duplicate_prompts_are_dropped_and_reported(tmp_path, capsys):
    tsv = tmp_path / "dup.tsv"
    tsv.write_text("Prompt\tCategory\tChallenge\tNote\nhello\tAnimals\tSimple Detail\t\n"
                   "a red fox\tAnimals\tSimple Detail\t\n Hello \tAnimals\tSimple Detail\tagain\n"
                   "hello\tPeople\tSimple Detail\t\n", encoding="utf-8")
    work = ["build", "--workdir", str(tmp_path / "ws"), "prompts", "--partiprompts", str(tsv)]
    assert cli(work + ["-n", "4"]) == 2
    assert "asked for 4 prompts but the source has only 3 distinct" in capsys.readouterr().err
    assert cli(work + ["-n", "3"]) == 0
    assert "data row 3 repeats data row 1" in capsys.readouterr().err
    rows = read_jsonl(tmp_path / "ws" / "prompts.jsonl")
    assert [r["source_row"] for r in rows] == [1, 2, 4]  # the same prompt in another category is another set
    assert len({r["set_id"] for r in rows}) == 3


def test_bad_count_and_non_utf8_source_are_one_line_errors(tmp_path, capsys):
    work = ["build", "--workdir", str(tmp_path / "ws"), "prompts"]
    for n in ("0", "-3"):
        assert cli(work + ["-n", n]) == 2
        assert capsys.readouterr().err == f"error: -n/--count must be at least 1, not {n}\n"
    assert not (tmp_path / "ws" / "prompts.jsonl").exists()
    tsv = tmp_path / "latin1.tsv"
    tsv.write_bytes("Prompt\tCategory\tChallenge\tNote\na cat\tAnimals\tSimple Detail\t\n"
                    "crème brûlée\tFood & Beverage\tSimple Detail\t\n".encode("latin-1"))
    assert cli(work + ["-n", "1", "--partiprompts", str(tsv)]) == 2
    assert capsys.readouterr().err == f"error: {tsv}: line 3 is not UTF-8 text (byte 0xe8); save the file as UTF-8\n"


class Killed(BaseException):
    """Stands in for SIGKILL: no handler of the stage catches it."""


def test_a_selection_killed_at_any_write_resumes_to_the_same_prompts(tmp_path, monkeypatch):
    """prompts.jsonl was appended a line at a time and its settings saved after the last one: a run killed
    in between left part of a selection that every rerun refused ("made with other settings (None); use
    --force"). A kill at each fsync in turn must leave a workspace that a plain rerun completes."""
    import os

    args = ["prompts", "-n", "12", "--seed", "3"]
    assert cli(["build", "--workdir", str(tmp_path / "clean"), *args]) == 0
    expected = (tmp_path / "clean" / "prompts.jsonl").read_bytes()
    real_fsync, kill_at = os.fsync, 1
    while True:
        work = str(tmp_path / f"killed-{kill_at}")
        calls = []

        def fsync(fd, kill_at=kill_at, calls=calls):
            calls.append(fd)
            if len(calls) == kill_at:
                raise Killed
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        try:
            cli(["build", "--workdir", work, *args])
            finished = True
        except Killed:
            finished = False
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert cli(["build", "--workdir", work, *args]) == 0, f"killed at fsync {kill_at}"
        assert (Path(work) / "prompts.jsonl").read_bytes() == expected
        if finished:
            break
        kill_at += 1
