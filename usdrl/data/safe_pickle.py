"""Read pickles without running code: only plain containers, NumPy arrays and NumPy scalars are admitted.

A pickle names the globals it needs ("module.name") and calls them while loading; a crafted file can
name ``os.system`` or ``builtins.eval``. ``load_pickle`` resolves only the names on an explicit
allow-list and stops with a DataError naming the file and the refused global for anything else; a content whose
shared references expand beyond ``usdrl.validation.MOST_NODES`` values (a 320-byte "billion laughs") is refused
too. Every pickle the project reads goes through it.
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.errors import DataError
from usdrl.validation import check_structure_size

# Builtins that only build plain values (never eval, exec, getattr, __import__, open, ...).
SAFE_BUILTINS = ("bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list", "range",
                 "set", "slice", "str", "tuple")


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _numpy_globals() -> dict[str, Any]:
    """The NumPy reconstruction functions under their NumPy 2 (numpy._core) and NumPy 1 (numpy.core) names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy < 1.26
        from numpy.core import multiarray, numeric
    functions = {"multiarray._reconstruct": multiarray._reconstruct, "multiarray.scalar": multiarray.scalar,
                 "numeric._frombuffer": numeric._frombuffer}
    allowed: dict[str, Any] = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for package in ("numpy._core", "numpy.core"):
        allowed.update({f"{package}.{name}": function for name, function in functions.items()})
    return allowed


def allowed_globals() -> dict[str, Any]:
    """Every global a pickle may name, "module.name" -> the object it resolves to."""
    import builtins
    import codecs

    allowed = {f"builtins.{name}": getattr(builtins, name) for name in SAFE_BUILTINS}
    allowed["_codecs.encode"] = codecs.encode  # protocol 2 pickles of bytes
    allowed["collections.OrderedDict"] = collections.OrderedDict
    allowed.update(_numpy_globals())
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only ``allowed_globals()``; anything else raises RefusedGlobal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed = allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        """The allowed global ``module.name`` (Python 2 names read as their Python 3 ones); any other raises
        RefusedGlobal."""
        # Python 2 names (__builtin__.list, commands.call) mean what pickle maps them to in Python 3.
        python3_module, python3_name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        full_name = f"{python3_module}.{python3_name}"
        if full_name not in self.allowed:
            written = f"{module}.{name}"
            raise RefusedGlobal(full_name if written == full_name else f"{full_name} (written {written})")
        return self.allowed[full_name]

    def persistent_load(self, pid: Any) -> Any:
        """Always refused: a persistent id (a reference to an object outside the file) raises RefusedGlobal."""
        raise RefusedGlobal(f"persistent id {pid!r}")


def load_pickle(path: str | Path, encoding: str = "latin1") -> Any:
    """The content of a pickle file made of dicts, lists, tuples, sets, str, bytes, numbers, NumPy arrays and scalars.

    ``encoding`` decodes Python 2 ``str`` objects (latin1 also keeps Python 2 NumPy arrays readable).
    Raises DataError naming the file for a missing or unreadable file and for any refused global.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        with open(path, "rb") as handle:
            content = RestrictedUnpickler(handle, encoding=encoding).load()
    except RefusedGlobal as refused:
        raise DataError(f"{path}: refused to load: the pickle names the global {refused.name}, which is not a plain "
                        f"container, NumPy array or scalar (loading it could run code); re-save the data as "
                        f"plain lists or arrays") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OSError) as error:
        raise DataError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    check_structure_size(content, str(path), DataError)  # shared references may expand to billions of values
    return content
