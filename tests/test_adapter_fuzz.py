"""Fuzzing the file-based dataset adapters: malformed input gives a DatasetError naming the file
(and the line or row where there is one) or a split whose skip counts explain every dropped row,
never another exception.

Each test starts from a small valid fixture in the adapter's real schema, applies random
corruptions (a truncated or byte-flipped file; a dropped, renamed, repeated or retyped field or
column; a repeated line or row; an image path leaving the folder or naming no file; an unknown
field) and reads it as the runner does (``adapter.split``, then the episodes and a few images).
Examples are derandomized so CI is deterministic; a failing example found once is kept below as
an explicit regression case.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures_adapters import PROMPTS, jpeg, pickapic_row, write_pickapic
from pigbench.adapter import DatasetAdapter, DatasetError
from pigbench.adapters.pickapic import UNREADABLE_IMAGES
from pigbench.adapters.pigbench_format import write_dataset
from pigbench.protocol import ImageError, Label
from pigbench.registry import adapters
from pigbench.splits import SplitResult

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
K = 2  # reference size of the fuzzed splits: small fixtures still give targets

# values a field is retyped to: other types, empty, huge and negative numbers, nested values
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.just(""), st.just(" "), st.integers(-3, 3), st.just(2**70), st.just(-(2**63) - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.lists(st.integers(-2, 5), max_size=5),
    st.just([[]]), st.just({"nested": 1}), st.just("../../outside.jpg"), st.just("/etc/hostname"),
    st.just("images/no_such_file.jpg"),
)


# --- the shared checks --------------------------------------------------------------------------------
class Recorder:
    """Wraps an adapter's ``skip`` to keep every ``where`` it is given (the examples keep only 5)."""

    def __init__(self, adapter: DatasetAdapter) -> None:
        self.wheres: list[str] = []
        original = adapter.skip

        def skip(reason: str, where: str) -> None:
            self.wheres.append(where)
            original(reason, where)

        adapter.skip = skip  # type: ignore[method-assign]


def read_as_the_runner_does(name: str, root: Path, options: dict, data_files: list[str],
                            line_of_error: Optional[str] = None) -> Optional[SplitResult]:
    """``adapter.split`` at seed 0 and reference size ``K`` (None: dynamic for ``pigbench``), then every
    episode and a few images, as a run reads them; a DatasetError must name a data file (and match
    ``line_of_error`` when given); None when one was raised."""
    adapter = adapters.get(name)(str(root), options)
    try:
        split = adapter.split(seed=0, reference_size=None if name == "pigbench" else K)
    except DatasetError as exc:
        message = str(exc)
        assert any(f in message for f in data_files) or str(root) in message, message
        if line_of_error is not None:
            assert re.search(line_of_error, message), message
        return None
    assert sum(split.skipped_records.values()) >= sum(adapter.skipped.values())
    for reason, count in {**split.skipped_records, **split.skipped_users}.items():
        assert count > 0 and reason and split.skip_examples.get(reason), reason
    ids = [ep.target.sample_id for ep in split.episodes]
    assert len(ids) == len(set(ids))
    assert split.users == len({ep.user_id for ep in split.episodes})
    for ep in list(split.episodes)[:3]:
        assert ep.target.gold in (Label.A, Label.B, Label.TIE)
        assert isinstance(ep.target.prompt, str) and ep.references is not None
        for image in (ep.target.image_a, ep.target.image_b):
            try:
                image.open()
            except ImageError:
                pass  # that sample becomes INVALID in a run
    split.summary()
    return split


def account_lines(adapter: DatasetAdapter, recorder: Recorder, path: Path, other: Callable[[Any], bool] = lambda v: False) -> None:
    """Every non-blank line of ``path`` gave a record (``source_row`` ``name:line``), was counted as
    a skip naming that line, or is a line ``other`` accepts (a marker)."""
    try:
        records = list(adapter.records())
    except DatasetError:
        return
    rows = {r.source_row for r in records}
    assert not rows & {f"{path.name}:{n}" for n in lines_repeating_a_field(path)}, "a line naming a field twice gave a record"
    skipped = {m.group(0) for w in recorder.wheres if (m := re.match(rf"{re.escape(path.name)}:\d+", w))}
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        where = f"{path.name}:{lineno}"
        if where in rows or where in skipped:
            continue
        assert other(json.loads(raw)), f"{where} was dropped without a count: {raw[:80]!r}"


def lines_repeating_a_field(path: Path) -> list[int]:
    """Line numbers of ``path`` holding an object that names a field twice."""
    def pairs(items: list) -> dict:
        if len({k for k, _ in items}) != len(items):
            raise KeyError("repeated")
        return dict(items)

    out = []
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            json.loads(raw, object_pairs_hook=pairs)
        except KeyError:
            out.append(lineno)
        except ValueError:
            pass
    return out


# --- corruptions of text and JSON-lines files -----------------------------------------------------------
@st.composite
def byte_damage(draw: Any, data: bytes) -> bytes:
    """``data`` truncated at a random byte, or with a few random bytes replaced (also non-UTF-8 ones)."""
    if draw(st.booleans()):
        return data[:draw(st.integers(0, len(data)))]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.sampled_from([0x00, 0x0A, 0x22, 0x7B, 0x80, 0xC3, 0xFF, 0x5D, 0x31]))
    return bytes(out)


@st.composite
def line_damage(draw: Any, lines: list[dict], fields: list[str]) -> tuple[list[str], int]:
    """One JSON-lines mutation of ``lines`` (objects): the new lines (text) and the 1-based line it touched."""
    lines = [dict(v) for v in lines]
    i = draw(st.integers(0, len(lines) - 1))
    field = draw(st.sampled_from(fields))
    kind = draw(st.sampled_from(["drop", "rename", "retype", "unknown", "repeat-line", "repeat-field", "not-object",
                                 "list-item"]))
    text = [json.dumps(v) for v in lines]
    if kind == "drop":
        lines[i].pop(field, None)
    elif kind == "rename":
        lines[i][field.upper()] = lines[i].pop(field, None)
    elif kind == "retype":
        lines[i][field] = draw(ODD_VALUES)
    elif kind == "unknown":
        lines[i]["unknown_field"] = draw(ODD_VALUES)
    elif kind == "list-item" and isinstance(lines[i].get(field), list) and lines[i][field]:
        items = list(lines[i][field])
        items[draw(st.integers(0, len(items) - 1))] = draw(ODD_VALUES)
        lines[i][field] = items
    if kind == "repeat-line":
        text.insert(i + 1, text[i])
        return text, i + 2
    text[i] = json.dumps(lines[i])
    if kind == "repeat-field":  # the same name twice: JSON parsers keep one of them
        text[i] = text[i][:-1] + f", {json.dumps(field)}: {json.dumps(draw(ODD_VALUES))}" + "}"
    elif kind == "not-object":
        text[i] = json.dumps(draw(ODD_VALUES))
    return text, i + 1


def write_lines(path: Path, text: list[str]) -> None:
    path.write_text("".join(t + "\n" for t in text), encoding="utf-8")


def copy_of(template: Path) -> tuple[tempfile.TemporaryDirectory, Path]:
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name) / template.name
    shutil.copytree(template, root)
    return tmp, root


# --- pigbench ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pigbench_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "pigbench"
    (root / "images").mkdir(parents=True)
    instances = []
    for k in range(5):
        images = [f"images/p{k}_{j}.jpg" for j in range(4)]
        for j, rel in enumerate(images):
            (root / rel).write_bytes(jpeg(10 * k + j))
        instances.append({"instance_id": f"p{k}", "base_prompt": PROMPTS[k], "category": "Artifacts", "challenge": "Simple Detail",
                          "prompts": [f"{PROMPTS[k]}, variant {j}" for j in range(4)], "images": images,
                          "generator": "sdxl", "seeds": [10 * k + j for j in range(4)]})
    rankings = [{"user_id": u, "instance_id": f"p{k}", "ranks": [1 + (k + j) % 4 for j in range(4)]}
                for u in ("u1", "u2") for k in range(4)]
    write_dataset(root, instances, rankings)
    return root


def pigbench_lines(path: Path) -> list[dict]:
    return [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines()]


def damage_jsonl(data: Any, path: Path, fields: list[str]) -> Optional[str]:
    """Damage ``path`` (a JSON-lines file of objects): its bytes, or a line or field of it (drawn).
    Returns the ``file:line`` pattern an error must name for a damaged line, None for damaged bytes."""
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(byte_damage(path.read_bytes())))
        return None
    text, _ = data.draw(line_damage(pigbench_lines(path), fields))
    write_lines(path, text)
    return rf"{re.escape(path.name)}:\d+"


@FUZZ
@given(data=st.data())
def test_pigbench_format_survives_corruption(pigbench_template, data):
    tmp, root = copy_of(pigbench_template)
    with tmp:
        stem = data.draw(st.sampled_from(["rankings", "instances"]))
        path = root / f"{stem}.jsonl"
        fields = ["user_id", "instance_id", "ranks"] if stem == "rankings" else \
            ["instance_id", "base_prompt", "prompts", "images", "seeds", "category"]
        line = damage_jsonl(data, path, fields)
        read_as_the_runner_does("pigbench", root, {}, ["rankings.jsonl", "instances.jsonl"], line)
        adapter = adapters.get("pigbench")(str(root), {})
        recorder = Recorder(adapter)
        account_lines(adapter, recorder, root / "rankings.jsonl")


def test_pigbench_format_image_path_escaping_the_folder_is_refused(pigbench_template):
    tmp, root = copy_of(pigbench_template)
    with tmp:
        lines = pigbench_lines(root / "instances.jsonl")
        lines[1]["images"][0] = "../../outside.jpg"
        write_lines(root / "instances.jsonl", [json.dumps(v) for v in lines])
        with pytest.raises(DatasetError, match=r"instances\.jsonl:2: image path '\.\./\.\./outside\.jpg' must be relative"):
            adapters.get("pigbench")(str(root), {}).split(seed=0, reference_size=None)


# --- PASTA ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pasta_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "pasta"
    (root / "img").mkdir(parents=True)
    n, lines = iter(range(1000)), []
    for traj in ("tA", "tB"):
        for turn in range(1, K + 2):
            slates = []
            for s in range(4):
                paths = [f"img/{traj}_{turn}_{s}_{j}.jpg" for j in range(4)]
                for rel in paths:
                    (root / rel).write_bytes(jpeg(next(n)))
                slates.append(paths)
            lines.append({"trajectory_id": traj, "rater_id": "r1", "turn": turn, "prompt": PROMPTS[0],
                          "expanded_prompts": [f"{PROMPTS[0]}, style {s}" for s in range(4)], "images": slates,
                          "chosen": turn % 4})
    write_lines(root / "turns.jsonl", [json.dumps(v) for v in lines])
    return root


@FUZZ
@given(data=st.data())
def test_pasta_survives_corruption(pasta_template, data):
    tmp, root = copy_of(pasta_template)
    with tmp:
        path = root / "turns.jsonl"
        line = damage_jsonl(data, path, ["trajectory_id", "rater_id", "turn", "prompt", "expanded_prompts", "images", "chosen"])
        read_as_the_runner_does("pasta", root, {}, ["turns.jsonl"], line)
        adapter = adapters.get("pasta")(str(root), {})
        account_lines(adapter, Recorder(adapter), path)


# --- PIP -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pip_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "pip"
    data, images = root / "user_data", root / "regenerated"
    data.mkdir(parents=True)
    images.mkdir()
    n = iter(range(1000))
    for user, header in (("111", "train_samples:"), ("222", "Preferences:")):
        lines: list[Any] = [header]
        for i, prompt in enumerate(PROMPTS[:K + 2]):
            rid = f"{user}_{i}"
            (images / f"{rid}.jpg").write_bytes(jpeg(next(n)))
            lines.append({"id": rid, "prompt": prompt, "user_id": user, "NSFW": "Unlikely", "result_url": "https://x.invalid"})
            if i == K:
                lines.append("test_samples:")
        write_lines(data / f"{user}.jsonl", [json.dumps(v) for v in lines])
    return root


@FUZZ
@given(data=st.data())
def test_pip_survives_corruption(pip_template, data):
    tmp, root = copy_of(pip_template)
    with tmp:
        path = root / "user_data" / data.draw(st.sampled_from(["111.jsonl", "222.jsonl"]))
        line = None
        if data.draw(st.booleans()):
            path.write_bytes(data.draw(byte_damage(path.read_bytes())))
        else:
            values = [json.loads(t) for t in path.read_text().splitlines()]
            objects = [i for i, v in enumerate(values) if isinstance(v, dict)]
            text, touched = data.draw(line_damage([values[i] for i in objects], ["id", "prompt", "NSFW", "user_id"]))
            by_line = {i: json.dumps(v) for i, v in enumerate(values)}
            out = [by_line[i] for i in range(objects[0])] + text  # markers before the first record kept in place
            marker_at = [i for i in range(objects[0], len(values)) if i not in objects]
            for i in marker_at:  # the other markers back at their positions
                out.insert(i, by_line[i])
            write_lines(path, out)
            line = rf"{re.escape(path.name)}:\d+"
        options = {"images": str(root / "regenerated")}
        read_as_the_runner_does("pip", root, options, ["111.jsonl", "222.jsonl", "user_data"], line)
        adapter = adapters.get("pip")(str(root), options)
        account_lines(adapter, Recorder(adapter), path, other=lambda v: isinstance(v, str))


# --- learn-user-pref -----------------------------------------------------------------------------------
LUP_COLUMNS = ["user_id", "reference_list", "reference_list_bad", "reference_prompt_list", "image0", "image1", "prompt", "label0"]


def lup_rows() -> list[dict]:
    rows = []
    for r, (user, label) in enumerate([(7, 1), (7, 0), (8, 0.5), (8, 1)]):
        refs = range(10 * r, 10 * r + K + 1)
        rows.append({"user_id": user, "reference_list": [jpeg(100 + 2 * i) for i in refs],
                     "reference_list_bad": [jpeg(101 + 2 * i) for i in refs],
                     "reference_prompt_list": [f"{PROMPTS[i % len(PROMPTS)]} #{i}" for i in refs],
                     "image0": jpeg(2 * r), "image1": jpeg(2 * r + 1), "prompt": PROMPTS[r], "label0": label})
    return rows


LUP_ODD = st.one_of(ODD_VALUES, st.just(b""), st.just(b"not an image"), st.just(np.zeros(3, np.int64)),
                    st.just(np.zeros((2, 2, 5), np.uint8)), st.just(np.zeros((0, 0), np.uint8)), st.just(float("nan")),
                    st.just(np.float64(7.0)), st.just((1, 2)))


@st.composite
def lup_frame(draw: Any) -> pd.DataFrame:
    rows = lup_rows()
    frame = pd.DataFrame(rows, columns=LUP_COLUMNS)
    kind = draw(st.sampled_from(["cell", "list-item", "drop", "rename", "repeat-column", "repeat-row", "column-type"]))
    col = draw(st.sampled_from(LUP_COLUMNS))
    r = draw(st.integers(0, len(rows) - 1))
    if kind == "cell":
        frame[col] = frame[col].astype(object)
        frame.at[r, col] = draw(LUP_ODD)
    elif kind == "list-item" and col.startswith("reference"):
        items = list(frame.at[r, col])
        items[draw(st.integers(0, len(items) - 1))] = draw(LUP_ODD)
        frame.at[r, col] = items
    elif kind == "drop":
        frame = frame.drop(columns=[col])
    elif kind == "rename":
        frame = frame.rename(columns={col: col.upper()})
    elif kind == "repeat-column":
        frame = pd.concat([frame, frame[[col]]], axis=1)
    elif kind == "repeat-row":
        frame = pd.concat([frame, frame.iloc[[r]]], ignore_index=draw(st.booleans()))
    elif kind == "column-type":
        frame[col] = [draw(LUP_ODD)] * len(frame)
    return frame


@FUZZ
@given(data=st.data())
def test_learn_user_pref_survives_corruption(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "bench_test_w_bad.pkl"
        frame = data.draw(lup_frame())
        with path.open("wb") as fh:
            pickle.dump(frame, fh, protocol=data.draw(st.sampled_from([2, 4, 5])))
        byte_level = data.draw(st.booleans())
        if byte_level:  # truncated or bytes replaced (the restricted unpickler checks what it builds)
            path.write_bytes(data.draw(byte_damage(path.read_bytes())))
        split = read_as_the_runner_does("pickapic-lup", root, {}, [path.name])
        if split is not None and not byte_level:  # one target per row: each row an episode or a counted skip
            assert len(split.episodes) + sum(split.skipped_records.values()) == len(frame)
            users = frame.loc[:, frame.columns == "user_id"].to_numpy().ravel().tolist()
            spelled = {str(u) for u in users} | {str(int(u)) for u in users if isinstance(u, float) and u.is_integer()}
            assert {ep.user_id for ep in split.episodes} <= spelled


# --- Pick-a-Pic ----------------------------------------------------------------------------------------
PICKAPIC_NAMES = ["ranking_id", "user_id", "caption", "label_0", "label_1", "has_label", "best_image_uid",
                  "image_0_uid", "image_1_uid", "jpg_0"]


def pickapic_rows() -> list[dict]:
    rows, n = [], 0
    for user in (5, 6):
        for j in range(K + 2):
            rid = 100 * user + j
            rows.append(pickapic_row(rid, user, PROMPTS[j], n, n + 1, [1.0, 0.0, 0.5][j % 3]))
            n += 2
    return rows


def odd_column(draw: Any, column: pa.ChunkedArray) -> pa.Array:
    """``column`` with one cell changed (null, empty, huge, negative) or the whole column retyped."""
    values = column.to_pylist()
    i = draw(st.integers(0, len(values) - 1))
    if draw(st.booleans()):
        t = column.type
        values[i] = draw(st.one_of(st.none(), st.just(values[(i + 1) % len(values)]), *(
            [st.integers(-(2**63), 2**63 - 1), st.just(-1)] if pa.types.is_integer(t) else
            [st.floats(allow_nan=True), st.just(-1.0)] if pa.types.is_floating(t) else
            [st.just(""), st.just(" \t "), st.just("none"), st.text(max_size=4)] if pa.types.is_string(t) else
            [st.just(b""), st.just(b"\xff\xd8 not a jpeg")] if pa.types.is_binary(t) else [st.booleans()])))
        return pa.array(values, t)
    return draw(st.sampled_from([
        pa.array([str(v) for v in values], pa.string()), pa.array([None] * len(values), pa.null()),
        pa.array([len(str(v)) for v in values], pa.int32()), pa.array([[1]] * len(values), pa.list_(pa.int64())),
        pa.array([float(k) for k in range(len(values))], pa.float32())]))


@st.composite
def pickapic_table(draw: Any, table: pa.Table) -> pa.Table:
    names = [n for n in PICKAPIC_NAMES if n in table.column_names]
    name = draw(st.sampled_from(names))
    at = table.column_names.index(name)
    kind = draw(st.sampled_from(["column", "column", "drop", "rename", "repeat-column", "repeat-row"]))
    if kind == "column":
        return table.set_column(at, name, odd_column(draw, table[name]))
    if kind == "drop":
        return table.remove_column(at)
    if kind == "rename":
        return table.rename_columns([n.upper() if n == name else n for n in table.column_names])
    if kind == "repeat-column":
        return table.append_column(name, table[name])
    r = draw(st.integers(0, len(table) - 1))
    return pa.concat_tables([table, table.slice(r, 1)])


@pytest.fixture(scope="module")
def pickapic_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "pickapic"
    rows = pickapic_rows()
    write_pickapic(root / "meta", rows, images=False, shards=1, row_group_size=4)
    write_pickapic(root / "images", rows, images=True, shards=1, row_group_size=4)
    return root


@FUZZ
@given(data=st.data())
def test_pickapic_survives_corruption(pickapic_template, data):
    tmp, root = copy_of(pickapic_template)
    with tmp:
        which = data.draw(st.sampled_from(["meta", "images"]))
        path = next((root / which / "data").glob("*.parquet"))
        byte_level = data.draw(st.booleans())
        if byte_level:
            path.write_bytes(data.draw(byte_damage(path.read_bytes())))
        else:
            pq.write_table(data.draw(pickapic_table(pq.read_table(path))), path, row_group_size=4)
        names = [p.name for p in root.rglob("*.parquet")] + [str(root)]  # a shard, or the folder of the images option
        options = {"images_path": str(root / "images"), "images_cache": "none"}
        read_as_the_runner_does("pickapic", root / "meta", options, names)
        if which == "meta" and not byte_level:  # every metadata row kept or counted
            adapter = adapters.get("pickapic")(str(root / "meta"), {"images": "none"})
            try:
                kept = len(list(adapter.records()))
            except DatasetError:
                return
            assert kept + sum(adapter.skipped.values()) == pq.read_metadata(path).num_rows


def test_fuzz_fixtures_are_valid(pigbench_template, pasta_template, pip_template, pickapic_template):
    """The uncorrupted fixtures give targets, so the fuzz tests start from data the adapters accept."""
    with tempfile.TemporaryDirectory() as tmp:
        pickle.dump(pd.DataFrame(lup_rows(), columns=LUP_COLUMNS), open(Path(tmp) / "bench_test_w_bad.pkl", "wb"))
        for name, root, options in (
                ("pigbench", pigbench_template, {}), ("pasta", pasta_template, {}),
                ("pip", pip_template, {"images": str(pip_template / "regenerated")}), ("pickapic-lup", Path(tmp), {}),
                ("pickapic", pickapic_template / "meta", {"images_path": str(pickapic_template / "images"), "images_cache": "none"})):
            split = read_as_the_runner_does(name, root, options, [])
            assert split is not None and split.episodes and not Counter(split.skipped_records), (name, split and split.summary())


# --- regression cases the fuzzing found ----------------------------------------------------------------
def test_a_json_line_naming_a_field_twice_is_a_counted_skip_not_a_record_of_either_value(pigbench_template):
    """json.loads kept the last of two ``user_id`` values silently: the ranking went to another user."""
    tmp, root = copy_of(pigbench_template)
    with tmp:
        text = (root / "rankings.jsonl").read_text().splitlines()
        text[0] = text[0][:-1] + ', "user_id": "u9"}'
        write_lines(root / "rankings.jsonl", text)
        adapter = adapters.get("pigbench")(str(root), {})
        records = list(adapter.records())
        assert len(records) == len(text) - 1 and "u9" not in {r.user_id for r in records}
        assert adapter.skipped["JSON line repeats a field"] == 1
        assert adapter.skip_examples["JSON line repeats a field"] == ["rankings.jsonl:1: field 'user_id' given twice"]


def test_a_repeated_parquet_column_is_an_error_naming_the_shard_and_column(pickapic_template):
    """A metadata shard with two ``ranking_id`` columns raised pyarrow's KeyError from the schema check."""
    tmp, root = copy_of(pickapic_template)
    with tmp:
        path = next((root / "meta" / "data").glob("*.parquet"))
        table = pq.read_table(path)
        pq.write_table(table.append_column("ranking_id", table["ranking_id"]), path)
        with pytest.raises(DatasetError, match=rf"{re.escape(path.name)}: column 'ranking_id' appears 2 times"):
            adapters.get("pickapic")(str(root / "meta"), {"images": "none"}).split(seed=0, reference_size=K)


def test_strings_not_utf8_in_a_with_images_shard_skip_their_row_group_naming_the_shard(pickapic_template):
    """A damaged page of uids read as invalid UTF-8 raised UnicodeDecodeError in the hashing pass, then stopped
    the split with an error naming the shard; its row group is now skipped, named in a warning and counted."""
    tmp, root = copy_of(pickapic_template)
    with tmp:
        path = next((root / "images" / "data").glob("*.parquet"))
        table = pq.read_table(path)
        uids = [u.encode() for u in table["image_0_uid"].to_pylist()]
        uids[0] = b"\x80" + uids[0][1:]
        offsets = np.cumsum([0] + [len(u) for u in uids]).astype(np.int32)
        bad = pa.Array.from_buffers(pa.string(), len(uids), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(uids))])
        pq.write_table(table.set_column(table.column_names.index("image_0_uid"), "image_0_uid", bad), path)
        with pytest.warns(RuntimeWarning, match=rf"skipping its (\d+) rows of the split: {re.escape(str(path))}: row group 0 "
                                                r"\(rows 0-\d+\) cannot be read as parquet: .*UTF8") as caught:
            split = adapters.get("pickapic")(str(root / "meta"), {"images_path": str(root / "images"), "images_cache": "none"}
                                             ).split(seed=0, reference_size=K)
        skipped, = (int(m.group(1)) for w in caught if (m := re.search(r"skipping its (\d+) rows", str(w.message))))
        assert split.skipped_records[UNREADABLE_IMAGES] == skipped > 0


def test_a_repeated_dataframe_column_is_an_error_naming_the_file_and_column():
    """Two ``user_id`` columns made every user id the text of a pandas Series, silently."""
    with tempfile.TemporaryDirectory() as tmp:
        frame = pd.DataFrame(lup_rows(), columns=LUP_COLUMNS)
        with (Path(tmp) / "bench_test_w_bad.pkl").open("wb") as fh:
            pickle.dump(pd.concat([frame, frame[["user_id"]]], axis=1), fh)
        with pytest.raises(DatasetError, match=r"bench_test_w_bad\.pkl: column 'user_id' appears 2 times"):
            adapters.get("pickapic-lup")(tmp, {}).split(seed=0, reference_size=K)
