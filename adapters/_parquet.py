"""Parquet shards of hub datasets: discovery by the hub's file names, schema checks, and reads
of only the columns and row groups needed.

Hub parquet shards are named ``data/{split}-{NNNNN}-of-{MMMMM}[-{hex}].parquet`` (main branch)
or ``default/{split}/{NNNN}.parquet`` (the ``refs/convert/parquet`` branch). :class:`ShardSet`
opens them lazily (local paths, or hub paths through an fsspec filesystem), finds rows by a key
column reading only that column, and reads chosen rows one row group at a time, counting the
row groups it reads. A file that is not readable parquet, or whose strings are not UTF-8, is a
:class:`DatasetError` naming it (:func:`parquet_errors`, :func:`validated`). A row group that fails to
read or decode while the file's footer reads is an :class:`UnreadableRowGroup` naming the file, the
group and its rows; the readers that go over many groups can skip it instead (``on_unreadable``).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pigbench.adapter import DatasetError

TypeCheck = Callable[[pa.DataType], bool]

STRING: TypeCheck = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)  # noqa: E731
INTEGER: TypeCheck = pa.types.is_integer
FLOAT: TypeCheck = lambda t: pa.types.is_floating(t) or pa.types.is_integer(t)  # noqa: E731
BOOL: TypeCheck = pa.types.is_boolean
BINARY: TypeCheck = lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)  # noqa: E731
TYPE_NAMES = {STRING: "string", INTEGER: "int64", FLOAT: "float64", BOOL: "bool", BINARY: "binary"}


def shard_split(path: Union[str, Path]) -> Optional[str]:
    """The split a hub parquet shard belongs to, from its name, or None if not a shard name."""
    text = str(path).replace("\\", "/")
    m = re.search(r"(?:^|/)([A-Za-z0-9_]+)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet$", text)
    if m:
        return m.group(1)
    m = re.search(r"(?:^|/)([A-Za-z0-9_]+)/\d{4}\.parquet$", text)
    return m.group(1) if m else None


def find_shards(root: Path, split: str) -> list[Path]:
    """Every parquet shard of ``split`` under ``root`` (recursive), sorted by path. A ``root`` that is a
    ``.parquet`` file is taken as is, unless its name is a hub shard name of another split (an error)."""
    if root.is_file():
        named = shard_split(root.name)
        if named is not None and named != split:
            raise DatasetError(f"{root}: a '{named}' shard by its name, not of the '{split}' split asked for")
        return [root] if root.suffix == ".parquet" else []
    return sorted(p for p in root.rglob("*.parquet") if shard_split(p.relative_to(root)) == split)


def missing_shards(paths: Sequence[Union[str, Path]]) -> list[str]:
    """The hub shards (``{folder}/{split}-NNNNN-of-MMMMM*.parquet``) absent from ``paths``: each folder's
    shards of one split and count must number ``00000`` to ``MMMMM - 1``. Other names are ignored."""
    have: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    for p in map(Path, paths):
        m = re.fullmatch(r"([A-Za-z0-9_]+)-(\d{5})-of-(\d{5})(?:-[0-9a-f]+)?\.parquet", p.name)
        if m:
            have[(str(p.parent), m.group(1), int(m.group(3)))].add(int(m.group(2)))
    return [str(Path(folder) / f"{split}-{i:05d}-of-{n:05d}*.parquet")
            for (folder, split, n), found in sorted(have.items()) for i in range(n) if i not in found]


@contextmanager
def parquet_errors(name: Union[str, Path]) -> Iterator[None]:
    """Turn pyarrow's error on a file that is not readable parquet into a :class:`DatasetError` naming ``name``."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{name}: cannot read as parquet: {' '.join(str(exc).split())}") from None


def validated(table: pa.Table) -> pa.Table:
    """``table`` after a full validation: parquet readers do not check that string values are UTF-8
    (a damaged page reads as invalid strings), which would fail later, far from the file; call it
    inside :func:`parquet_errors`."""
    table.validate(full=True)
    return table


class UnreadableRowGroup(DatasetError):
    """A row group of a parquet file whose footer reads but whose data fails to read or decode: the
    file's ``name``, the group's index, its ``rows`` (positions in the file, from 0) and pyarrow's reason."""

    def __init__(self, name: str, group: int, rows: range, reason: str) -> None:
        self.name, self.group, self.rows, self.reason = name, group, rows, reason
        super().__init__(f"{name}: row group {group} (rows {rows.start}-{rows.stop - 1}) cannot be read as parquet: {reason}")


def _damaged(exc: BaseException) -> bool:
    """Whether ``exc``, raised reading a row group, is pyarrow's own (a page it cannot read or decode,
    strings that are not UTF-8): not an error of the file object under it (a hub file's network errors are
    subclasses of OSError that pyarrow passes on as raised), which is no property of the file's bytes; nor
    running out of memory or a cancelled read (pyarrow's ArrowMemoryError and ArrowCancelled are ArrowExceptions)."""
    if isinstance(exc, (MemoryError, pa.ArrowCancelled)):
        return False
    return type(exc) is OSError or isinstance(exc, pa.ArrowException)


def read_row_group(pf: pq.ParquetFile, name: str, group: int, columns: Sequence[str]) -> pa.Table:
    """The ``columns`` of row group ``group`` of ``pf`` (the file ``name``), validated
    (:func:`validated`); :class:`UnreadableRowGroup` if its data fails to read or decode, a
    :class:`DatasetError` naming the file for another read error (:func:`parquet_errors`)."""
    with parquet_errors(name):
        try:
            return validated(pf.read_row_group(group, columns=list(columns)))
        except (OSError, pa.ArrowException) as exc:
            if not _damaged(exc):
                raise
            first = sum(pf.metadata.row_group(g).num_rows for g in range(group))
            rows = range(first, first + pf.metadata.row_group(group).num_rows)
            raise UnreadableRowGroup(name, group, rows, " ".join(str(exc).split())) from None


OnUnreadable = Callable[[UnreadableRowGroup], None]


def readable_row_groups(pf: pq.ParquetFile, name: str, columns: Sequence[str],
                        on_unreadable: Optional[OnUnreadable] = None) -> Iterator[tuple[int, pa.Table]]:
    """``(group, table)`` of each row group of ``pf`` in order (:func:`read_row_group`); an unreadable
    one is passed to ``on_unreadable`` and left out (raised when it is None)."""
    for group in range(pf.num_row_groups):
        try:
            table = read_row_group(pf, name, group, columns)
        except UnreadableRowGroup as exc:
            if on_unreadable is None:
                raise
            on_unreadable(exc)
            continue
        yield group, table


def read_schema(path: Union[str, Path]) -> pa.Schema:
    """The arrow schema of the parquet file at ``path``; :class:`DatasetError` naming it if unreadable."""
    with parquet_errors(path):
        return pq.read_schema(path)


def check_schema(schema: pa.Schema, expected: Mapping[str, TypeCheck], where: str) -> None:
    """Raise :class:`DatasetError` naming ``where`` and the column when one is missing, repeated or mistyped."""
    names = schema.names
    for name, ok in expected.items():
        if name not in names:
            raise DatasetError(
                f"{where}: missing column {name!r} ({TYPE_NAMES.get(ok, 'see the adapter')}); "
                f"found columns: {', '.join(names)}"
            )
        if names.count(name) > 1:
            raise DatasetError(f"{where}: column {name!r} appears {names.count(name)} times; found columns: {', '.join(names)}")
        found = schema.field(name).type
        if not ok(found):
            raise DatasetError(f"{where}: column {name!r} has type {found}, expected {TYPE_NAMES.get(ok, ok)}")


class Location(NamedTuple):
    """Where a row lives: shard index, row group, row within the group."""

    shard: int
    group: int
    row: int


class ShardSet:
    """Parquet shards read lazily; only the columns and row groups asked for are read."""

    def __init__(self, paths: Sequence[Union[str, Path]], filesystem: Any = None) -> None:
        self.paths = list(paths)
        self.filesystem = filesystem  # None: local files; else an fsspec filesystem (hub)
        self.row_groups_read = 0
        self._files: dict[int, pq.ParquetFile] = {}
        self._lock = threading.Lock()

    def name(self, shard: int) -> str:
        return str(self.paths[shard])

    def file(self, shard: int) -> pq.ParquetFile:
        with self._lock:
            if shard not in self._files:
                path = self.paths[shard]
                with parquet_errors(path):
                    src = path if self.filesystem is None else self.filesystem.open(path, "rb")
                    self._files[shard] = pq.ParquetFile(src)
            return self._files[shard]

    def read_group(self, shard: int, group: int, columns: Sequence[str]) -> pa.Table:
        """The ``columns`` of one row group, counted in ``row_groups_read``; :class:`UnreadableRowGroup`
        if it fails to read or decode (:func:`read_row_group`)."""
        pf = self.file(shard)
        check_schema(pf.schema_arrow, {c: lambda t: True for c in columns}, self.name(shard))
        with self._lock:
            self.row_groups_read += 1
        return read_row_group(pf, self.name(shard), group, columns)

    def locate(self, key_column: str, keys: pa.Array, on_unreadable: Optional[OnUnreadable] = None) -> dict[Any, Location]:
        """The first location of each key in ``keys``, reading only ``key_column`` of each shard, one
        row group at a time: a group whose column is unreadable is passed to ``on_unreadable`` and its
        keys are not found (raised when it is None)."""
        wanted = pa.array(keys)
        found: dict[Any, Location] = {}
        for shard in range(len(self.paths)):
            pf = self.file(shard)
            check_schema(pf.schema_arrow, {key_column: lambda t: True}, self.name(shard))
            for group, table in readable_row_groups(pf, self.name(shard), [key_column], on_unreadable):
                col = table.column(0)
                hits = pc.indices_nonzero(pc.is_in(col, value_set=wanted)).to_numpy()
                for row, key in zip(hits.tolist(), col.take(hits).to_pylist()):
                    found.setdefault(key, Location(shard, group, row))
        return found

    def read_rows(self, locations: Mapping[Any, Location], columns: Sequence[str],
                  on_unreadable: Optional[Callable[[UnreadableRowGroup, list[Any]], None]] = None) -> Iterator[tuple[Any, dict]]:
        """``(key, {column: value})`` for each located row, reading each needed row group once, in
        (shard, group) order; a group that fails to read is passed to ``on_unreadable`` with the keys
        located in it, which are left out (raised when it is None)."""
        by_group: dict[tuple[int, int], list[tuple[int, Any]]] = defaultdict(list)
        for key, loc in locations.items():
            by_group[(loc.shard, loc.group)].append((loc.row, key))
        for (shard, group), rows in sorted(by_group.items()):
            rows.sort()
            try:
                table = self.read_group(shard, group, columns)
            except UnreadableRowGroup as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(exc, [key for _, key in rows])
                continue
            table = table.take([r for r, _ in rows])
            values = {c: table.column(c).to_pylist() for c in columns}
            for i, (_, key) in enumerate(rows):
                yield key, {c: values[c][i] for c in columns}


MAX_BYTES = 1 << 30  # RowCache's default bound on the values it keeps


class RowCache:
    """Column values of located rows, read on demand one row group at a time (thread-safe).

    A request for a row not kept reads the row group holding it and keeps the values of every
    located row in it (only those rows, not the group), so that the group is not read again for
    its other rows, which the runner asks later and in another order (user by user). Rows are let
    go least recently used first once their bytes and strings exceed ``max_bytes``: memory holds at
    most ``max_bytes`` plus the located rows of the groups being read. One thread reads a group at
    a time; the others asking its rows wait for that read instead of reading it again.
    """

    def __init__(self, shards: ShardSet, locations: Mapping[Any, Location], columns: Sequence[str], max_bytes: int = MAX_BYTES) -> None:
        self.shards, self.locations, self.columns, self.max_bytes = shards, locations, list(columns), max_bytes
        self._by_group: dict[tuple[int, int], dict[Any, Location]] = defaultdict(dict)
        for key, loc in locations.items():
            self._by_group[(loc.shard, loc.group)][key] = loc
        self._rows: OrderedDict[Any, tuple[dict, int]] = OrderedDict()  # key -> (values, their size)
        self._bytes = 0
        self._reading: dict[tuple[int, int], threading.Lock] = {}  # one lock per row group, taken while reading it
        self._lock = threading.Lock()

    def get(self, key: Any) -> dict:
        """The values of the located row ``key``, reading its row group unless the row is kept."""
        loc = self.locations[key]
        group = (loc.shard, loc.group)
        with self._lock:
            if key in self._rows:
                self._rows.move_to_end(key)
                return self._rows[key][0]
            reading = self._reading.setdefault(group, threading.Lock())
        with reading:
            with self._lock:
                if key in self._rows:  # read by the thread this one waited for
                    self._rows.move_to_end(key)
                    return self._rows[key][0]
            values = dict(self.shards.read_rows(self._by_group[group], self.columns))
            with self._lock:
                for k, v in values.items():
                    if k != key:
                        self._keep(k, v)
                self._keep(key, values[key])  # the most recently used
        return values[key]

    def rows(self, keep: bool = True, keys: Optional[Iterable[Any]] = None,
             on_unreadable: Optional[Callable[[UnreadableRowGroup, list[Any]], None]] = None) -> Iterator[tuple[Any, dict]]:
        """``(key, values)`` of every located row (or of the located ``keys``), each row group holding
        them read once; with ``keep`` the rows are kept as :meth:`get` keeps them, so that later requests
        read no group while their rows stay kept (``keep=False``: the caller keeps them elsewhere, e.g. on disk).
        A group that fails to read is passed to ``on_unreadable`` with its keys, left out (:meth:`ShardSet.read_rows`)."""
        locations = self.locations if keys is None else {k: self.locations[k] for k in keys}
        for key, values in self.shards.read_rows(locations, self.columns, on_unreadable):
            if keep:
                with self._lock:
                    self._keep(key, values)
            yield key, values

    def _keep(self, key: Any, values: dict) -> None:
        """Keep ``values`` as the most recently used row, then let go of the least recently used
        rows while the kept values exceed ``max_bytes``; the caller holds the lock."""
        if key in self._rows:
            self._bytes -= self._rows.pop(key)[1]
        size = sum(len(v) for v in values.values() if isinstance(v, (bytes, str)))
        self._rows[key] = (values, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._bytes -= self._rows.popitem(last=False)[1][1]
