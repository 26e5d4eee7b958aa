"""A restricted unpickler for pickled pandas DataFrames of plain values and images.

Unpickling can call any importable function. :func:`load_restricted` only lets a pickle rebuild
plain containers, strings, numbers and bytes, numpy arrays and scalars, a pandas DataFrame /
Series with its index and block internals (pandas 1.x to 3.x names, numpy 1.x and 2.x names),
pyarrow-backed string columns, and PIL images. Any other global is refused with a
:class:`DatasetError` naming the file and the global. :func:`load_trusted` is plain ``pickle``,
for files the user vouches for.
"""

from __future__ import annotations

import _compat_pickle
import functools
import pickle
from pathlib import Path
from typing import Any

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


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in :data:`ALLOWED` and PIL image classes (which cannot be called)."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names of protocols 0-2 (``__builtin__``, ``copy_reg``), mapped as pickle itself maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) == ("pyarrow.lib", "_restore_array"):
            return _restore_validated_array
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        if module == "PIL" or module.startswith("PIL."):
            from PIL import Image

            obj = super().find_class(module, name)
            if isinstance(obj, type) and issubclass(obj, Image.Image):
                return _uninitializable(obj)
        raise _Refused(module, name)


def _restore_validated_array(data: Any) -> Any:
    """pyarrow's ``_restore_array`` followed by a full validation: pyarrow trusts the pickled offsets
    and lengths, and unchecked ones make reading the array read outside its buffers (a crash)."""
    from pyarrow.lib import _restore_array

    array = _restore_array(data)
    array.validate(full=True)
    return array


@functools.cache
def _uninitializable(cls: type) -> type:
    """A subclass of the PIL image class ``cls`` whose ``__init__`` refuses: pickles rebuild images
    with ``__new__`` and ``__setstate__``, while calling the class (``ImageFile(path)``) would open
    any file the pickle names."""

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise _Refused(cls.__module__, f"{cls.__qualname__}(...), a call that opens files")

    return type(cls.__name__, (cls,), {"__init__": refuse, "__module__": cls.__module__, "__qualname__": cls.__qualname__})


def load_restricted(path: Path) -> Any:
    """Unpickle ``path`` allowing only plain data, pandas frames, numpy arrays and PIL images."""
    try:
        with path.open("rb") as fh:
            return RestrictedUnpickler(fh).load()
    except _Refused as exc:
        raise DatasetError(
            f"{path}: refused to unpickle the global {exc.qualname}: this file holds more than plain data, pandas "
            "frames, numpy arrays and PIL images. Load only files you trust; to load this one anyway pass "
            "--dataset-option trust_pickle=true"
        ) from None
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: cannot unpickle: {type(exc).__name__}: {exc}") from None


def load_trusted(path: Path) -> Any:
    """Plain ``pickle.load`` (runs any code the file asks for): only for files the user trusts."""
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: cannot unpickle: {type(exc).__name__}: {exc}") from None
