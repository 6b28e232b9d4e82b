"""Allow-listed unpickling of weight arrays: only plain numeric numpy arrays are ever reconstructed.

xain 0.6 exchanges weights through the bucket as pickles. Whoever can write to the bucket controls those
bytes, so nothing here calls ``pickle.loads``: the unpickler resolves only the globals numpy needs to
rebuild an ``ndarray`` and refuses everything else before it is looked up, let alone called.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

# (module, name) pairs an ndarray pickle references, numpy 1.x and 2.x spellings, protocols 2 to 5.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("__builtin__", "bytes"),
    }
)
NUMERIC_KINDS = "fiu"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class RefusedPayload(ValueError):
    """The bytes are not a pickled plain numeric array (or are too large); nothing was executed."""


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedPayload(f"refused pickle global {module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid: object) -> object:
        raise RefusedPayload("refused pickle persistent id")


def loads_array(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Reconstruct a numeric ndarray from pickle bytes, or raise :class:`RefusedPayload`."""
    if len(data) > max_bytes:
        raise RefusedPayload(f"payload of {len(data)} bytes exceeds the {max_bytes} byte limit")
    try:
        obj = _ArrayUnpickler(io.BytesIO(data)).load()
    except RefusedPayload:
        raise
    except Exception as exc:  # any malformed stream is refused the same way
        raise RefusedPayload(f"not a pickled array ({type(exc).__name__})") from None
    if type(obj) is not np.ndarray:
        raise RefusedPayload(f"payload is a {type(obj).__name__}, not a numpy ndarray")
    if obj.dtype.kind not in NUMERIC_KINDS:
        raise RefusedPayload(f"array dtype {obj.dtype} is not numeric")
    return obj


def dumps_array(array: np.ndarray) -> bytes:
    """Pickle bytes of a plain numeric array, readable by stock xain 0.6 (``pickle.loads``) and by us."""
    array = np.asarray(array)
    if array.dtype.kind not in NUMERIC_KINDS:
        raise TypeError(f"refusing to write a non-numeric array ({array.dtype})")
    return pickle.dumps(np.ascontiguousarray(array), protocol=4)
