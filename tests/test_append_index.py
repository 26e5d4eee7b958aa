"""AppendIndex: additions appended under a lock, compaction, torn log lines, the no-fcntl fallback."""

import json
import multiprocessing
import os
import threading

import pytest

import pigbench.append_index as append_index
from pigbench.append_index import AppendIndex


def entry_ok(e):
    return isinstance(e, list) and len(e) == 2 and all(type(x) is int for x in e)


def make(tmp_path):
    return AppendIndex(tmp_path / "index-k.json", entry_ok)


def _add_one_by_one(path, offset, n, barrier):
    index = AppendIndex(path, entry_ok)
    barrier.wait()
    for i in range(offset, offset + n):
        index.add({str(i): [i, i]})


def test_two_processes_adding_at_once_lose_nothing(tmp_path):
    """Read-merge-write without a lock lost the additions of a process writing between another's
    read and rename; appends and compactions under the lock keep every entry of both."""
    ctx = multiprocessing.get_context("fork")
    path, barrier, n = tmp_path / "index-k.json", ctx.Barrier(2), 300
    procs = [ctx.Process(target=_add_one_by_one, args=(path, offset, n, barrier)) for offset in (0, n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert AppendIndex(path, entry_ok).read() == {str(i): [i, i] for i in range(2 * n)}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_an_addition_to_a_large_index_appends_and_compaction_comes_once_the_log_outgrows_it(tmp_path):
    index = make(tmp_path)
    index.add({str(i): [i, i] for i in range(1000)})  # no main file yet: written whole
    assert not index.log_path.exists()
    main, stat = index.path.read_bytes(), index.path.stat()
    index.add({"5000": [1, 2]})
    index.add({"5001": [3, 4], "7": [0, 0]})  # a later entry replaces an earlier one
    assert index.path.read_bytes() == main and index.path.stat().st_ino == stat.st_ino  # not rewritten
    assert index.log_path.read_text().splitlines() == ['{"5000": [1, 2]}', '{"5001": [3, 4]}', '{"7": [0, 0]}']
    expected = {**{str(i): [i, i] for i in range(1000)}, "5000": [1, 2], "5001": [3, 4], "7": [0, 0]}
    assert index.read() == expected
    big = {str(i): [i, i] for i in range(10_000, 11_000)}  # the log would outgrow the main file: compacted
    index.add(big)
    assert not index.log_path.exists() and json.loads(index.path.read_bytes()) == {**expected, **big}


def test_a_torn_log_line_is_ignored_and_the_next_addition_starts_a_line(tmp_path):
    index = make(tmp_path)
    index.add({str(i): [i, i] for i in range(100)})
    index.add({"100": [1, 1]})
    with index.log_path.open("ab") as log:
        log.write(b'{"101": [2, ')  # an adder killed mid-write
    assert index.read() == {**{str(i): [i, i] for i in range(100)}, "100": [1, 1]}
    index.add({"102": [3, 3]})
    assert index.log_path.read_bytes().endswith(b'{"101": [2, \n{"102": [3, 3]}\n')
    with index.log_path.open("ab") as log:
        log.write(b'{"103": ["not", "an entry"]}\n["not", "an object"]\n\xff\n')  # wrong shapes, not UTF-8
    assert index.read() == {**{str(i): [i, i] for i in range(100)}, "100": [1, 1], "102": [3, 3]}


def test_a_damaged_main_file_counts_as_empty_and_is_replaced_at_the_next_compaction(tmp_path):
    index = make(tmp_path)
    index.path.write_text('{"1": [1, 1], "2": "not an entry"}')
    assert index.read() == {}
    index.add({str(i): [i, i] for i in range(3, 9)})  # the log would outgrow the file: compacted
    assert json.loads(index.path.read_text()) == {str(i): [i, i] for i in range(3, 9)} and not index.log_path.exists()
    index.path.write_text("[[1, ")
    assert index.read() == {}


def test_a_log_removed_by_a_compaction_while_read_still_gives_its_entries(tmp_path, monkeypatch):
    """Readers take no lock: the log is read first, and a compaction writes the main file before it
    removes the log, so a compaction between the two reads loses nothing."""
    index = make(tmp_path)
    index.add({str(i): [i, i] for i in range(100)})
    index.add({"100": [1, 1]})
    read_log = AppendIndex._read_log

    def then_compact(self):
        added = read_log(self)
        monkeypatch.setattr(AppendIndex, "_read_log", read_log)  # the compaction's own read
        make(tmp_path).add({str(i): [i, i] for i in range(200, 400)})  # compacts and removes the log
        return added

    monkeypatch.setattr(AppendIndex, "_read_log", then_compact)
    entries = index.read()
    assert not index.log_path.exists()
    assert entries == {**{str(i): [i, i] for i in (*range(100), *range(200, 400))}, "100": [1, 1]}


def test_adders_take_the_lock_and_without_fcntl_add_unlocked(tmp_path, monkeypatch):
    index = make(tmp_path)
    index.add({"1": [1, 1]})
    assert index.lock_path.exists()
    fd = os.open(index.lock_path, os.O_RDONLY)
    try:  # held by another: an adder waits for it
        append_index.fcntl.flock(fd, append_index.fcntl.LOCK_EX | append_index.fcntl.LOCK_NB)
        adder = threading.Thread(target=make(tmp_path).add, args=({"2": [2, 2]},))  # flock: per open file
        adder.start()
        adder.join(timeout=0.5)
        assert adder.is_alive() and make(tmp_path).read() == {"1": [1, 1]}
    finally:
        os.close(fd)
    adder.join(timeout=30)
    assert not adder.is_alive() and make(tmp_path).read() == {"1": [1, 1], "2": [2, 2]}
    monkeypatch.setattr(append_index, "fcntl", None)  # Windows
    other = AppendIndex(tmp_path / "other.json", entry_ok)
    other.add({"1": [1, 1]})
    other.add({"2": [2, 2]})
    assert other.read() == {"1": [1, 1], "2": [2, 2]} and not other.lock_path.exists()


def test_an_addition_that_fails_raises_its_oserror(tmp_path):
    index = make(tmp_path)
    index.add({str(i): [i, i] for i in range(100)})
    index.log_path.mkdir()  # the log cannot be appended to
    with pytest.raises(IsADirectoryError):
        index.add({"100": [1, 1]})
