"""The on-disk embedding cache: one file per stored batch plus an append-only index, robust to kills."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

import pigbench.embedding_cache as embedding_cache
from pigbench.atomic_file import STALE_AGE, TEMP_NAME, temp_path, write_atomic
from pigbench.embedding_cache import EmbeddingCache


def _h(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_a_batch_is_one_file_and_a_new_instance_reads_it_lazily(tmp_path):
    first = EmbeddingCache("m@1", tmp_path)
    first.put_many({_h(i): torch.full((4,), float(i)) for i in range(5)})
    first.put_many({_h(i): torch.full((4,), float(i)) for i in range(5, 7)})
    folder = first.directory
    assert len(list(folder.glob("*.pt"))) == 2
    assert len((folder / "index.tsv").read_text().splitlines()) == 7

    second = EmbeddingCache("m@1", tmp_path)
    assert _h(3) in second and _h(99) not in second and second.disk_hits == 0
    assert torch.equal(second.get(_h(3)), torch.full((4,), 3.0))
    assert second.disk_hits == 5  # the whole file of the first batch came along
    assert second.get(_h(99)) is None
    assert _h(3) not in EmbeddingCache("m@2", tmp_path)  # another key, another folder


def test_a_killed_writer_leaves_nothing_half_read(tmp_path):
    cache = EmbeddingCache("m", tmp_path)
    cache.put_many({_h(1): torch.ones(2)})
    folder = cache.directory
    (folder / "123-deadbeef0000.pt").write_bytes(b"")  # a file whose index lines were never written
    (folder / "123-abcdef000000.pt.tmp").write_bytes(b"partial")  # a write that never finished
    with open(folder / "index.tsv", "a") as index:
        index.write(f"{_h(2)}\t999-000000000000.pt\n")  # a line whose file is missing
        index.write(_h(3)[:20])  # a partial last line
    again = EmbeddingCache("m", tmp_path)
    assert _h(1) in again and _h(2) not in again and _h(3) not in again
    assert torch.equal(again.get(_h(1)), torch.ones(2))


def test_a_damaged_batch_file_counts_as_not_cached(tmp_path):
    cache = EmbeddingCache("m", tmp_path)
    cache.put_many({_h(1): torch.ones(2), _h(2): torch.zeros(2)})
    cache.put_many({_h(3): torch.ones(3)})
    (damaged,) = [p for p in cache.directory.glob("*.pt") if torch.load(p, weights_only=True).keys() == {_h(1), _h(2)}]
    damaged.write_bytes(b"not a torch file")
    again = EmbeddingCache("m", tmp_path)
    assert _h(1) in again and again.get(_h(1)) is None
    assert _h(1) not in again and _h(2) not in again  # the whole file is forgotten, so both are embedded again
    assert torch.equal(again.get(_h(3)), torch.ones(3))


@pytest.mark.parametrize("content", [torch.ones(2), [torch.ones(2)], {1: torch.ones(2)}, {_h(1): [1.0, 1.0]}],
                         ids=["tensor", "list", "int-keys", "not-tensors"])
def test_a_batch_file_that_is_not_a_dict_of_features_counts_as_not_cached(tmp_path, content):
    cache = EmbeddingCache("m", tmp_path)
    cache.put_many({_h(1): torch.ones(2), _h(2): torch.zeros(2)})
    cache.put_many({_h(3): torch.ones(3)})
    (damaged,) = [p for p in cache.directory.glob("*.pt") if torch.load(p, weights_only=True).keys() == {_h(1), _h(2)}]
    torch.save(content, damaged)  # a readable torch file, but not what put_many writes
    again = EmbeddingCache("m", tmp_path)
    assert again.get(_h(1)) is None and again.disk_hits == 0
    assert _h(1) not in again and _h(2) not in again
    assert torch.equal(again.get(_h(3)), torch.ones(3))


def test_an_index_line_naming_a_file_without_its_hash_counts_as_not_cached(tmp_path):
    cache = EmbeddingCache("m", tmp_path)
    cache.put_many({_h(1): torch.ones(2), _h(2): torch.zeros(2)})
    cache.put_many({_h(3): torch.full((2,), 3.0)})
    index = cache.directory / "index.tsv"
    first, second = dict.fromkeys(line.split("\t")[1] for line in index.read_text().splitlines())
    index.write_text(index.read_text().replace(first, "<swap>").replace(second, first).replace("<swap>", second))  # names swapped
    again = EmbeddingCache("m", tmp_path)
    assert _h(1) in again and again.get(_h(1)) is None  # its line names the file of _h(3)
    assert _h(1) not in again and _h(2) not in again  # every line naming that file is forgotten
    assert torch.equal(again.get(_h(3)), torch.full((2,), 3.0))  # read from the file that holds it
    assert again.disk_hits == 1


KILLED_IN_SAVE = ("import os, pathlib, signal, sys, torch\nfrom pigbench.embedding_cache import EmbeddingCache\n"
                  "cache = EmbeddingCache('m', sys.argv[1])\n"
                  "def replace(self, target):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
                  "pathlib.Path.replace = replace\ncache.put_many({'a' * 64: torch.ones(2)})")


def test_the_temporary_file_of_a_writer_killed_in_the_save_is_removed_when_the_cache_is_opened(tmp_path):
    """The cache wrote its temporary files under names of its own; it writes through write_atomic, whose
    temporary names (host, pid) remove_stale_temps sweeps as for results, and still sweeps its earlier names."""
    cache = EmbeddingCache("m", tmp_path)
    cache.put_many({_h(1): torch.ones(2)})
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_SAVE, str(tmp_path)])
    assert killed.returncode == -signal.SIGKILL
    (left,) = cache.directory.glob("*.tmp")
    assert TEMP_NAME.fullmatch(left.name) and torch.load(left, weights_only=True).keys() == {"a" * 64}
    live = temp_path(cache.directory / "1-0123456789ab.pt")  # a write of this live process
    legacy = [cache.directory / f"123-{i:012x}.pt.tmp" for i in range(2)]  # an older version's names: no host
    for path in (live, *legacy):
        path.write_bytes(b"part")
    old = time.time() - STALE_AGE - 60
    os.utime(legacy[0], (old, old))
    again = EmbeddingCache("m", tmp_path)
    assert sorted(again.directory.glob("*.tmp")) == sorted([live, legacy[1]])
    assert torch.equal(again.get(_h(1)), torch.ones(2))  # the finished batch is kept


def test_a_torn_key_json_is_rewritten_whole_and_the_features_stay(tmp_path, monkeypatch):
    cache = EmbeddingCache("m@1", tmp_path)
    cache.put_many({_h(1): torch.ones(2)})
    key_file = cache.directory / "key.json"
    assert json.loads(key_file.read_text()) == {"model_key": "m@1"}
    written = []

    def recording_write(path, data):
        written.append(path.name)
        write_atomic(path, data)

    monkeypatch.setattr(embedding_cache, "write_atomic", recording_write)

    EmbeddingCache("m@1", tmp_path)
    assert written == []  # a key.json that holds the key is left as is

    key_file.write_text('{"model_ke')  # torn by a writer killed mid-write
    again = EmbeddingCache("m@1", tmp_path)
    assert written == ["key.json"]  # through write_atomic: never torn again
    assert json.loads(key_file.read_text()) == {"model_key": "m@1"}
    assert torch.equal(again.get(_h(1)), torch.ones(2))

    key_file.write_bytes(b"\xff\xfe")  # not even text
    EmbeddingCache("m@1", tmp_path)
    assert written == ["key.json", "key.json"]
    assert json.loads(key_file.read_text()) == {"model_key": "m@1"}


def test_an_earlier_versions_temporary_name_with_a_host_is_swept_when_stale(tmp_path):
    """The version before write_atomic named its temporary files ``<pid>-<12 hex>.pt.<host>.tmp``: one a day
    old is removed, a recent one (perhaps another host's live writer) is kept."""
    cache = EmbeddingCache("m", tmp_path)
    stale, recent = (cache.directory / f"123-{i:012x}.pt.0badc0de.tmp" for i in range(2))
    for path in (stale, recent):
        path.write_bytes(b"part")
    old = time.time() - STALE_AGE - 60
    os.utime(stale, (old, old))
    again = EmbeddingCache("m", tmp_path)
    assert sorted(again.directory.glob("*.tmp")) == [recent]


def test_a_batch_whose_file_write_fails_gets_no_index_line(tmp_path, monkeypatch):
    """The index names a batch file only once it exists: a write that fails (a full disk) leaves no line."""
    import pigbench.embedding_cache as embedding_cache

    cache = EmbeddingCache("m", tmp_path)

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedding_cache, "write_atomic", disk_full)
    with pytest.raises(OSError, match="No space left"):
        cache.put_many({_h(1): torch.ones(2)})
    index = cache.directory / "index.tsv"
    assert not index.exists() or index.read_text() == ""
