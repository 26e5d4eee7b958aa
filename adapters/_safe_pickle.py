"""A restricted unpickler for pickled pandas DataFrames of plain values and images.

Unpickling can call any importable function. :func:`load_restricted` only lets a pickle rebuild
plain containers, strings, numbers and bytes, numpy arrays and scalars, a pandas DataFrame /
Series with its index and block internals (pandas 1.x to 3.x names, numpy 1.x and 2.x names),
pyarrow-backed string columns, and PIL images. Any other global is refused with a
:class:`DatasetError` naming the file and the global. :func:`load_trusted` is plain ``pickle``,
for files the user vouches for.

numpy and pandas trust the pieces a pickle hands their reconstructors: an object array whose
shape holds more items than its pickled list, a dtype whose state sets the object flags (or that
is numpy's shared ``float64`` itself), or frame blocks whose placements leave the column axis
make them read or write outside memory, and a damaged file crashes the interpreter (a segfault,
no message). So every array, dtype and block manager is checked against its own shape and axes
before it is built (:func:`_check_array_state`, :func:`_plain_dtype`, :func:`_check_blocks`), and
a disagreement is a :class:`DatasetError` naming the file. That needs the pure-Python unpickler:
the C one calls ``__setstate__`` (the ``BUILD`` opcode) with no hook in between.
"""

from __future__ import annotations

import _compat_pickle
import functools
import math
import pickle
import struct
from pathlib import Path
from typing import Any, Iterable, Sequence

from pigbench.adapter import DatasetError


def _names(module: str, *names: str) -> set[tuple[str, str]]:
    return {(module, n) for n in names}


ALLOWED: frozenset[tuple[str, str]] = frozenset(
    _names("builtins", "list", "dict", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int", "float",
           "complex", "bool", "slice", "range", "object")
    | _names("collections", "OrderedDict") | _names("_codecs", "encode") | _names("copyreg", "_reconstructor")
    | _names("numpy", "ndarray", "dtype")
    | {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    | {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")}
    | _names("pandas", "DataFrame", "Series", "Index", "RangeIndex", "StringDtype")
    | _names("pandas.core.frame", "DataFrame") | _names("pandas.core.series", "Series")
    | _names("pandas.core.internals.managers", "BlockManager", "SingleBlockManager")
    | _names("pandas.core.internals.blocks", "new_block", "Block", "ObjectBlock", "NumpyBlock", "IntBlock",
             "FloatBlock", "BoolBlock", "ExtensionBlock")
    | _names("pandas._libs.internals", "_unpickle_block", "BlockPlacement")
    | _names("pandas.core.indexes.base", "_new_Index", "Index") | _names("pandas.core.indexes.range", "RangeIndex")
    | _names("pandas.core.indexes.numeric", "Int64Index", "UInt64Index", "Float64Index")
    | _names("pandas.arrays", "ArrowStringArray", "StringArray")
    | _names("pandas.core.arrays.string_", "StringDtype", "StringArray")
    | _names("pandas.core.arrays.string_arrow", "ArrowStringArray")
    | _names("pyarrow.lib", "_restore_array", "type_for_alias", "py_buffer")
)


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _Inconsistent(pickle.UnpicklingError):
    """The pickle's pieces disagree (a shape and its data, a dtype and its state, blocks and their
    axes), or a dtype is not plain data: building it could crash the interpreter."""


class RestrictedUnpickler(pickle._Unpickler):
    """Resolves only the globals in :data:`ALLOWED` and PIL image classes (which cannot be called);
    numpy dtypes, arrays and pandas block managers are checked before they are built."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names of protocols 0-2 (``__builtin__``, ``copy_reg``), mapped as pickle itself maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _CHECKED:
            return _CHECKED[(module, name)]
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        if module == "PIL" or module.startswith("PIL."):
            from PIL import Image

            obj = super().find_class(module, name)
            if isinstance(obj, type) and issubclass(obj, Image.Image):
                return _uninitializable(obj)
        raise _Refused(module, name)

    def load_reduce(self) -> None:
        """``REDUCE`` (``func(*args)``) once :func:`_check_call` accepts the arguments."""
        _check_call(self.stack[-2], self.stack[-1])
        super().load_reduce()

    def load_build(self) -> None:
        """``BUILD`` (``obj.__setstate__(state)``) once :func:`_check_state` accepts the state."""
        _check_state(self.stack[-2], self.stack[-1])
        super().load_build()

    dispatch = {**pickle._Unpickler.dispatch, pickle.REDUCE[0]: load_reduce, pickle.BUILD[0]: load_build}


PLAIN_KINDS = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "float", "c": "complex", "S": "bytes",
               "U": "str", "O": "object"}


def _plain_dtype(spec: Any, align: Any = False, copy: Any = True) -> Any:
    """``numpy.dtype(spec)`` for a plain dtype (:data:`PLAIN_KINDS`, no fields), always a copy: a
    pickle's ``BUILD`` then sets the state of that copy, never of numpy's shared ``float64``."""
    import numpy as np

    if not isinstance(spec, str):
        raise _Inconsistent(f"a dtype is built from {type(spec).__name__} {spec!r}, not from a type code")
    dtype = np.dtype(spec, False, True)
    if dtype.kind not in PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _Inconsistent(f"dtype {dtype} is not plain data ({', '.join(PLAIN_KINDS.values())})")
    return dtype


def _check_state(obj: Any, state: Any) -> None:
    """Refuse a ``BUILD`` state that disagrees with ``obj`` (a dtype, an array, a block manager, a
    frame or series whose manager is missing or of the other kind)."""
    import numpy as np
    import pandas as pd
    from pandas.core.internals.managers import BlockManager, SingleBlockManager

    if isinstance(obj, (pd.DataFrame, pd.Series)):
        mgr = state.get("_mgr", state.get("_data")) if isinstance(state, dict) else state
        want = SingleBlockManager if isinstance(obj, pd.Series) else BlockManager
        if type(mgr) is not want:
            raise _Inconsistent(f"a pandas {type(obj).__name__} holds {type(mgr).__name__} where its {want.__name__} belongs")
    elif isinstance(obj, np.dtype):
        _check_dtype_state(obj, state)
    elif isinstance(obj, np.ndarray):
        _check_array_state(state)
    elif isinstance(obj, BlockManager):  # pandas < 2 pickles: axes and blocks in a "0.14.1" state
        try:
            legacy = state[3]["0.14.1"]
            blocks = [(b["values"], b["mgr_locs"]) for b in legacy["blocks"]]
            axes = legacy["axes"]
        except (TypeError, KeyError, IndexError):
            raise _Inconsistent("a pandas BlockManager state is not (..., {'0.14.1': {'axes', 'blocks'}})") from None
        _check_blocks(blocks, axes)


def _check_call(func: Any, args: Any) -> None:
    """Refuse pandas' ``BlockManager(blocks, axes, ...)`` / ``SingleBlockManager(block, axis, ...)``
    with blocks that do not fill their axes (other calls are built as they are)."""
    from pandas.core.internals.blocks import Block
    from pandas.core.internals.managers import BlockManager, SingleBlockManager

    if func is BlockManager:
        blocks = args[0] if isinstance(args, tuple) and args else None
        if not isinstance(blocks, (list, tuple)) or not all(isinstance(b, Block) for b in blocks) or len(args) < 2:
            raise _Inconsistent("a pandas BlockManager is not given (blocks, axes)")
        _check_blocks([(b.values, b.mgr_locs) for b in blocks], args[1])
    elif func is SingleBlockManager:
        block, axis = (args + (None, None))[:2] if isinstance(args, tuple) else (None, None)
        if not isinstance(block, Block) or getattr(block.values, "shape", None) != (len(axis),) or len(block.mgr_locs) != 1:
            raise _Inconsistent("a pandas Series block does not hold one value per row of its index")


def _check_dtype_state(dtype: Any, state: Any) -> None:
    """A dtype's state may only set the byte order of the plain dtype it was built as: numpy takes
    item size, alignment and flags (``63``: holds objects) from it unchecked."""
    fresh = dtype.__reduce__()[2]
    orders = ("|",) if fresh[1] == "|" else ("<", ">", "=")
    if not (isinstance(state, tuple) and len(state) == len(fresh) and state[1] in orders
            and state[0] == fresh[0] and all(type(a) is type(b) and a == b for a, b in zip(state[2:], fresh[2:]))):
        raise _Inconsistent(f"the state {state!r} of dtype {dtype} is not the state of that dtype")


def _count(shape: Any) -> int:
    """Number of items of an array ``shape`` (a tuple of at most 64 non-negative ints)."""
    if not (isinstance(shape, tuple) and len(shape) <= 64
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise _Inconsistent(f"array shape {shape!r} is not a tuple of non-negative integers")
    return math.prod(shape)


def _check_array_state(state: Any) -> None:
    """An array state ``([version,] shape, dtype, is_fortran, data)`` whose data fill the shape exactly:
    a list of one object per item for object arrays, bytes of ``items * itemsize`` otherwise."""
    import numpy as np

    if not (isinstance(state, tuple) and len(state) in (4, 5)):
        raise _Inconsistent("an array state is not a tuple of 4 or 5 fields")
    shape, dtype, fortran, data = state[-4:]
    count = _count(shape)
    if not isinstance(dtype, np.dtype) or dtype.kind not in PLAIN_KINDS or dtype.fields is not None:
        raise _Inconsistent(f"array dtype {dtype!r} is not a plain numpy dtype")
    if not isinstance(fortran, bool):
        raise _Inconsistent(f"array order flag {fortran!r} is not a bool")
    if dtype.hasobject:
        if not isinstance(data, list) or len(data) != count:
            found = f"{len(data)} items" if isinstance(data, list) else type(data).__name__
            raise _Inconsistent(f"object array of shape {shape} needs {count} items, the pickle holds {found}")
    elif not isinstance(data, (bytes, bytearray)) or len(data) != count * dtype.itemsize:
        found = f"{len(data)} bytes" if isinstance(data, (bytes, bytearray)) else type(data).__name__
        raise _Inconsistent(f"{dtype} array of shape {shape} needs {count * dtype.itemsize} bytes, the pickle holds {found}")


def _check_blocks(blocks: Iterable[tuple[Any, Any]], axes: Sequence[Any]) -> None:
    """Blocks ``(values, placement)`` of a frame with ``axes`` (columns, rows): each column in exactly
    one block, each block's values one row of ``len(rows)`` per placed column. pandas indexes its
    column map with the placements unchecked (a write outside memory)."""
    import numpy as np
    from pandas._libs.internals import BlockPlacement

    if not isinstance(axes, (list, tuple)) or len(axes) != 2:
        raise _Inconsistent(f"a pandas BlockManager has {len(axes) if isinstance(axes, (list, tuple)) else 'no'} axes, not 2")
    columns, rows = len(axes[0]), len(axes[1])
    placed = np.zeros(columns, dtype=bool)
    for values, placement in blocks:
        locs = placement if isinstance(placement, BlockPlacement) else BlockPlacement(placement)
        shape = getattr(values, "shape", None)
        expected = (len(locs), rows) if len(shape or ()) == 2 else (rows,)
        if shape != expected or (len(shape) == 1 and len(locs) != 1):
            raise _Inconsistent(f"a pandas block placed at {len(locs)} of {columns} columns over {rows} rows "
                                f"holds values of shape {shape}")
        if len(locs) > columns:
            raise _Inconsistent(f"a pandas block is placed at {len(locs)} columns of {columns}")
        at = locs.as_array
        if len(at) and (at.min() < 0 or at.max() >= columns or placed[at].any() or len(np.unique(at)) != len(at)):
            raise _Inconsistent(f"a pandas block is placed at columns {at.tolist()[:8]} outside the {columns} columns "
                                "or over another block's")
        placed[at] = True
    if not placed.all():
        raise _Inconsistent(f"pandas blocks leave columns {np.flatnonzero(~placed).tolist()[:8]} of {columns} empty")


def _restore_validated_array(data: Any) -> Any:
    """pyarrow's ``_restore_array`` on data :func:`_check_arrow_data` accepts, followed by a full
    validation: pyarrow trusts the pickled buffer list, offsets and lengths, and unchecked ones make
    building or reading the array read outside its buffers (a crash)."""
    from pyarrow.lib import _restore_array

    _check_arrow_data(data)
    array = _restore_array(data)
    array.validate(full=True)
    return array


def _check_arrow_data(data: Any) -> None:
    """``(type, length, null_count, offset, buffers, children, dictionary)`` with as many buffers
    and children as ``type`` has, no dictionary, and non-negative counts (null count -1: unknown)."""
    import pyarrow as pa

    if not (isinstance(data, tuple) and len(data) == 7 and isinstance(data[0], pa.DataType)):
        raise _Inconsistent("a pickled arrow array is not (type, length, null count, offset, buffers, children, dictionary)")
    kind, length, nulls, offset, buffers, children, dictionary = data
    if not all(isinstance(n, int) and n >= low for n, low in ((length, 0), (nulls, -1), (offset, 0))):
        raise _Inconsistent(f"a pickled arrow {kind} array has length {length!r}, null count {nulls!r}, offset {offset!r}")
    if not (isinstance(buffers, list) and len(buffers) == kind.num_buffers
            and all(b is None or isinstance(b, pa.Buffer) for b in buffers)):
        raise _Inconsistent(f"a pickled arrow {kind} array needs {kind.num_buffers} buffers, the pickle holds {buffers!r}")
    if not (isinstance(children, list) and len(children) == kind.num_fields) or dictionary is not None:
        raise _Inconsistent(f"a pickled arrow {kind} array does not hold {kind.num_fields} child arrays and no dictionary")
    for child in children:
        _check_arrow_data(child)


_CHECKED: dict[tuple[str, str], Any] = {  # globals resolved to a version that checks its arguments
    ("numpy", "dtype"): _plain_dtype, ("pyarrow.lib", "_restore_array"): _restore_validated_array}


@functools.cache
def _uninitializable(cls: type) -> type:
    """A subclass of the PIL image class ``cls`` whose ``__init__`` refuses: pickles rebuild images
    with ``__new__`` and ``__setstate__``, while calling the class (``ImageFile(path)``) would open
    any file the pickle names."""

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise _Refused(cls.__module__, f"{cls.__qualname__}(...), a call that opens files")

    return type(cls.__name__, (cls,), {"__init__": refuse, "__module__": cls.__module__, "__qualname__": cls.__qualname__})


# what a damaged pickle makes the unpickler or a reconstructor raise (a wrong key, codec, count, state)
LOAD_ERRORS = (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError, TypeError, LookupError,
               AssertionError, MemoryError, OverflowError, RecursionError, NotImplementedError)


def load_restricted(path: Path) -> Any:
    """Unpickle ``path`` allowing only plain data, pandas frames, numpy arrays and PIL images; a
    refused global, a damaged file or pieces that disagree are a :class:`DatasetError` naming it."""
    try:
        with path.open("rb") as fh:
            return RestrictedUnpickler(fh).load()
    except _Inconsistent as exc:
        raise DatasetError(f"{path}: refused to unpickle: {exc}: the file is damaged (or holds more than plain "
                           "data); building it as it is could crash the interpreter") from None
    except _Refused as exc:
        raise DatasetError(
            f"{path}: refused to unpickle the global {exc.qualname}: this file holds more than plain data, pandas "
            "frames, numpy arrays and PIL images. Load only files you trust; to load this one anyway pass "
            "--dataset-option trust_pickle=true"
        ) from None
    except struct.error:  # the pure-Python unpickler reading a number the file ends inside
        raise DatasetError(f"{path}: cannot unpickle: the pickle data was truncated") from None
    except LOAD_ERRORS as exc:
        raise DatasetError(f"{path}: cannot unpickle: {type(exc).__name__}: {exc}") from None


def load_trusted(path: Path) -> Any:
    """Plain ``pickle.load`` (runs any code the file asks for): only for files the user trusts."""
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)
    except LOAD_ERRORS as exc:
        raise DatasetError(f"{path}: cannot unpickle: {type(exc).__name__}: {exc}") from None
