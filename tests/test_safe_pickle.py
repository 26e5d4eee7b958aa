"""The restricted unpickler on damaged pickles: a pickle whose pieces disagree (an array's shape and
its data, a dtype and its state, frame blocks and their axes, an arrow array and its buffers) is a
DatasetError naming the file, never a crash of the interpreter.

Each damaged file is loaded in a child process, so a regression fails the test (the child dies
with a signal) instead of killing pytest. The first case is the fuzzing find, minimised: a byte
replaced in an object array's shape made numpy read past the pickled list.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pigbench.adapter import DatasetError
from pigbench.adapters._safe_pickle import load_restricted

# np.array(["a", "b"], dtype=object) at protocol 2, its shape (2,) made (255,) (byte 98)
OBJECT_ARRAY_SHAPE_255 = (
    b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85c_codecs\nencode\nX\x01\x00\x00\x00b"
    b"X\x06\x00\x00\x00latin1\x86R\x87R(K\x01K\xff\x85cnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87R(K\x03X\x01\x00"
    b"\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb\x89](X\x01\x00\x00\x00aX\x01\x00\x00\x00betb."
)

CHILD = """
import sys
from pathlib import Path
from pigbench.adapter import DatasetError
from pigbench.adapters._safe_pickle import load_restricted
try:
    obj = load_restricted(Path(sys.argv[1]))
    for _, row in obj.iterrows():  # a frame: read every value, as the adapter does
        [repr(v) for v in row.values]
    print("LOADED", repr(obj)[:200])
except DatasetError as exc:
    print("DatasetError:", exc)
"""


def load_in_child(path: Path) -> str:
    """What ``load_restricted(path)`` (and reading the frame) printed in a child; fails if it crashed."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the child died (returncode {done.returncode}): {done.stderr[-2000:]}"
    return done.stdout.strip()


def dump(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bench_test_w_bad.pkl"
    path.write_bytes(data)
    return path


def test_the_fuzzing_find_an_object_array_shape_beyond_its_list_is_refused(tmp_path):
    out = load_in_child(dump(tmp_path, OBJECT_ARRAY_SHAPE_255))
    assert out == (f"DatasetError: {tmp_path / 'bench_test_w_bad.pkl'}: refused to unpickle: object array of shape (255,) "
                   "needs 255 items, the pickle holds 2 items: the file is damaged (or holds more than plain data); "
                   "building it as it is could crash the interpreter")
    intact = bytearray(OBJECT_ARRAY_SHAPE_255)
    intact[98] = 2
    assert load_restricted(dump(tmp_path, bytes(intact))).tolist() == ["a", "b"]


def test_a_dtype_state_claiming_objects_for_floats_is_refused(tmp_path):
    data = bytearray(pickle.dumps(np.array([1.5, 2.5]), protocol=2))
    flags = data.index(b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t") + 11  # the dtype state's flags 0 -> 63 (holds objects)
    data[flags] = 63
    out = load_in_child(dump(tmp_path, bytes(data)))
    assert out.startswith("DatasetError:") and "state (3, '<', None, None, None, -1, -1, 63) of dtype float64" in out


def test_a_float_array_with_bytes_short_of_its_shape_is_refused(tmp_path):
    data = bytearray(pickle.dumps(np.zeros(4), protocol=2))
    data[data.index(b"K\x04\x85") + 1] = 9  # shape (4,) -> (9,): 72 bytes needed, 32 pickled
    out = load_in_child(dump(tmp_path, bytes(data)))
    assert "float64 array of shape (9,) needs 72 bytes, the pickle holds 32 bytes" in out


def test_a_structured_dtype_is_refused(tmp_path):
    out = load_in_child(dump(tmp_path, pickle.dumps(np.zeros(2, dtype=[("a", "i4")]), protocol=2)))
    assert out.startswith("DatasetError:") and "is not plain data" in out


def test_frame_blocks_placed_outside_the_columns_are_refused(tmp_path):
    from pandas._libs.internals import _unpickle_block
    from pandas.core.internals.managers import BlockManager

    frame = pd.DataFrame({"a": [0.0, 1.0], "b": [2.0, 3.0]})
    blocks = (_unpickle_block(np.zeros((1, 2)), slice(0, 1), 2), _unpickle_block(np.ones((1, 2)), slice(900000, 900001), 2))

    class BadPlacement(pickle.Pickler):  # pandas writes its column map at the placements, unchecked
        def reducer_override(self, obj):
            return (BlockManager, (blocks, obj.axes)) if isinstance(obj, BlockManager) else NotImplemented

    path = tmp_path / "bench_test_w_bad.pkl"
    with path.open("wb") as fh:
        BadPlacement(fh, protocol=4).dump(frame)
    out = load_in_child(path)
    assert out.startswith("DatasetError:") and "a pandas block is placed at columns [900000] outside the 2 columns" in out


def test_a_legacy_block_manager_state_is_checked_too(tmp_path):
    """pandas < 2 pickles build the manager empty and hand axes and blocks to ``__setstate__``."""
    import copyreg
    import io

    from pandas.core.internals.managers import BlockManager

    def legacy_pickle(locs) -> bytes:
        blocks = [{"values": np.zeros((2, 2)), "mgr_locs": locs}]
        state = (None, None, None, {"0.14.1": {"axes": [pd.Index(["a", "b"]), pd.RangeIndex(2)], "blocks": blocks}})

        class Legacy(pickle.Pickler):
            def reducer_override(self, obj):
                return (copyreg.__newobj__, (BlockManager,), state) if isinstance(obj, BlockManager) else NotImplemented

        out = io.BytesIO()
        Legacy(out, protocol=2).dump(BlockManager.__new__(BlockManager))
        return out.getvalue()

    good = load_restricted(dump(tmp_path, legacy_pickle(slice(0, 2, 1))))
    assert list(good.items) == ["a", "b"] and good.blocks[0].values.shape == (2, 2)
    out = load_in_child(dump(tmp_path, legacy_pickle(np.array([0, 7]))))
    assert out.startswith("DatasetError:") and "placed at columns [0, 7] outside the 2 columns" in out


def test_an_arrow_array_missing_its_buffers_is_refused(tmp_path):
    from pyarrow.lib import _restore_array

    class NoBuffers:  # a large_string array of 4 values with none of its 3 buffers: pyarrow reads them anyway
        def __reduce__(self):
            return _restore_array, ((pa.large_string(), 4, 0, 0, [], [], None),)

    out = load_in_child(dump(tmp_path, pickle.dumps({"prompt": NoBuffers()})))
    assert out.startswith("DatasetError:") and "a pickled arrow large_string array needs 3 buffers, the pickle holds []" in out


def test_a_frame_without_its_block_manager_is_refused(tmp_path):
    data = pickle.dumps(pd.DataFrame({"a": [1, 2]}), protocol=4)
    path = dump(tmp_path, data.replace(b"_mgr", b"_xyz", 1))
    with pytest.raises(DatasetError, match=r"bench_test_w_bad\.pkl: refused to unpickle: a pandas DataFrame holds NoneType "
                                           r"where its BlockManager belongs"):
        load_restricted(path)


def test_a_pickle_ending_inside_a_number_is_truncated_data(tmp_path):
    """The pure-Python unpickler raised struct.error on the frame length cut short."""
    with pytest.raises(DatasetError, match=r"bench_test_w_bad\.pkl: cannot unpickle: the pickle data was truncated"):
        load_restricted(dump(tmp_path, b"\x80\x04\x95"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_arrays_series_and_byte_orders_still_load(tmp_path, protocol):
    values = {"big": np.array([1.5, -2.0], dtype=">f8"), "text": np.array(["ab", "c"]), "bytes": np.array([b"x", b"yz"]),
              "flags": np.array([True, False]), "series": pd.Series([1, 2], index=["p", "q"]),
              "complex": np.array([1 + 2j]), "uint": np.arange(6, dtype=np.uint16).reshape(2, 3, order="F")}
    data = pickle.dumps(values, protocol=protocol)
    loaded, plain = load_restricted(dump(tmp_path, data)), pickle.loads(data)
    for key, value in values.items():  # as plain pickle gives them (numpy 2 makes byte orders native)
        assert type(loaded[key]) is type(value) and loaded[key].dtype == plain[key].dtype, key
        assert np.array_equal(np.asarray(loaded[key]), np.asarray(value)), key
    assert list(loaded["series"].index) == ["p", "q"]
