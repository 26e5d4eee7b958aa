"""pigbench/atomic_file.write_atomic: whole files, no temporary file left, concurrent writers apart."""

from pathlib import Path

from pigbench import atomic_file
from pigbench.atomic_file import write_atomic


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
