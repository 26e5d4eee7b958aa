"""pigbench/atomic_file.write_atomic: whole files, no temporary file left, concurrent writers apart."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pigbench import atomic_file
from pigbench.atomic_file import remove_stale_temps, write_atomic


def test_writers_of_one_pid_and_thread_id_on_two_hosts_keep_their_temporary_files_apart(tmp_path, monkeypatch):
    """Processes on two hosts sharing a folder (an image store on NFS) may have the same pid and
    thread id: while one writes, the other's write must neither take over nor remove its temporary file."""
    monkeypatch.setattr(atomic_file.os, "getpid", lambda: 7)
    monkeypatch.setattr(atomic_file.threading, "get_ident", lambda: 11)
    path = tmp_path / "index.json"
    real_replace = Path.replace
    other = []

    def replace_after_the_other_host(self, target):
        if not other:  # the other host writes the same file meanwhile
            other.append(target)
            write_atomic(path, b"other host")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_after_the_other_host)
    write_atomic(path, b"this host")
    assert path.read_bytes() == b"this host"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


def test_a_reader_during_the_write_sees_the_old_file_or_the_new_one_never_part(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_bytes(b"old results")
    real_write = Path.write_bytes
    seen = []

    def write_in_two_parts(self, data):  # a reader looks at the file between the parts
        real_write(self, data[:3])
        seen.append(path.read_bytes())
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_in_two_parts)
    write_atomic(path, b"new results")
    assert seen and set(seen) <= {b"old results", b"new results"}
    assert path.read_bytes() == b"new results"


def _gone_pid() -> int:
    """The pid of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


KILLED_MID_WRITE = ("import os, signal, sys\nfrom pathlib import Path\nfrom pigbench.atomic_file import remove_stale_temps, write_atomic\n"
                    "Path.replace = lambda self, target: os.kill(os.getpid(), signal.SIGKILL)\n"
                    "write_atomic(Path(sys.argv[1]), b'new')")


def test_a_writer_killed_mid_write_leaves_a_temporary_file_that_remove_stale_temps_removes(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b"old")
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(path)])
    assert killed.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir() if p.name != "results.json"]
    assert len(left) == 1 and atomic_file.TEMP_NAME.fullmatch(left[0])
    assert remove_stale_temps(tmp_path) == left
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"] and path.read_bytes() == b"old"


def test_remove_stale_temps_keeps_the_temporary_files_of_live_or_unknown_writers(tmp_path):
    def temp(host: str, pid: int, age: float = 0.0) -> str:
        name = f".index.json.{host}.{pid}.140245.0123456789ab.tmp"
        (tmp_path / name).write_bytes(b"part")
        os.utime(tmp_path / name, (time.time() - age, time.time() - age))
        return name

    other_host = "0" * 8 if atomic_file.HOST != "0" * 8 else "1" * 8
    dead, live = temp(atomic_file.HOST, _gone_pid()), temp(atomic_file.HOST, os.getpid())
    parent = temp(atomic_file.HOST, os.getppid())
    elsewhere = temp(other_host, _gone_pid())  # its pid may be alive on its own host
    old_elsewhere = temp(other_host, 1, age=atomic_file.STALE_AGE + 60)  # a day old: stale wherever it was written
    for other in ("index.json", ".index.json.tmp", "notes.tmp"):  # not temporary files of write_atomic
        (tmp_path / other).write_bytes(b"keep")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([dead, old_elsewhere])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live, parent, elsewhere, "index.json", ".index.json.tmp", "notes.tmp"])
    assert remove_stale_temps(tmp_path / "missing") == []  # a folder not there yet: nothing to do, no error


def test_the_results_folder_and_the_image_store_drop_killed_writers_temporary_files(tmp_path):
    from pigbench.synthetic_results import make_results

    from pigbench.adapters.pickapic import ImageStore

    for folder in (tmp_path / "results" / "synth", tmp_path / "images"):
        folder.mkdir(parents=True)
        killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(folder / "index.json")])
        assert killed.returncode == -signal.SIGKILL
    assert all(len(list(f.glob(".*.tmp"))) == 1 for f in (tmp_path / "results" / "synth", tmp_path / "images"))
    path = make_results(tmp_path / "results", "e")  # writes results/synth/e.json
    ImageStore(tmp_path / "images")
    assert list((tmp_path / "results" / "synth").glob(".*.tmp")) == [] and path.is_file()
    assert list((tmp_path / "images").iterdir()) == []


def test_fsync_flushes_the_temporary_file_to_disk_before_the_rename(tmp_path, monkeypatch):
    """The build workspace's files ask for durability (a power loss leaves the old file or the new
    one); results and image-store files do not pay for it."""
    path = tmp_path / "renders.jsonl"
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    write_atomic(path, b"a")
    assert synced == []
    write_atomic(path, b"b", fsync=True)
    assert len(synced) == 1 and Path(synced[0]).name.startswith(".renders.jsonl.") and path.read_bytes() == b"b"


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A full disk at the rename (or the write): the OSError is raised, the old file kept, no *.tmp left."""
    path = tmp_path / "index.json"
    path.write_bytes(b"old")

    def disk_full(self, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", disk_full)
    try:
        write_atomic(path, b"new")
    except OSError as exc:
        assert exc.errno == 28
    else:
        raise AssertionError("the failed write raised nothing")
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"] and path.read_bytes() == b"old"


def test_remove_stale_temps_keeps_names_that_only_begin_like_a_temporary_file(tmp_path):
    name = f".index.json.{atomic_file.HOST}.{_gone_pid()}.140245.0123456789ab.tmp"
    for kept in (name + ".orig", name + "~"):  # a user's copy of a temporary file
        (tmp_path / kept).write_bytes(b"keep")
    assert remove_stale_temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name + ".orig", name + "~"])


def test_remove_stale_temps_keeps_a_temporary_file_of_another_users_live_process(tmp_path, monkeypatch):
    """os.kill(pid, 0) on another user's process raises PermissionError: that writer is alive."""
    name = f".index.json.{atomic_file.HOST}.4242.140245.0123456789ab.tmp"
    (tmp_path / name).write_bytes(b"part")

    def not_permitted(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(atomic_file.os, "kill", not_permitted)
    assert remove_stale_temps(tmp_path) == [] and (tmp_path / name).exists()


def test_remove_stale_temps_goes_on_after_a_file_removed_meanwhile(tmp_path, monkeypatch):
    pid = _gone_pid()
    names = [f".{stem}.{atomic_file.HOST}.{pid}.140245.0123456789ab.tmp" for stem in ("a.json", "b.json", "c.json")]
    for name in names:
        (tmp_path / name).write_bytes(b"part")
    real_unlink, calls = os.unlink, []

    def gone_at_first(path):
        calls.append(path)
        if len(calls) == 1:  # another process removed this one between the listing and here
            real_unlink(path)
            raise FileNotFoundError(2, "No such file or directory", path)
        real_unlink(path)

    monkeypatch.setattr(atomic_file.os, "unlink", gone_at_first)
    removed = remove_stale_temps(tmp_path)
    assert len(calls) == 3 and len(removed) == 2 and list(tmp_path.iterdir()) == []
