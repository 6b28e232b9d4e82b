"""Weight arrays on the wire: ``.npy`` (parsed here, before anything is allocated) and xain 0.6 pickles.

Whoever can write to the bucket controls these bytes. :func:`decode` reads the ``.npy`` header itself and
allocates only the checked array. :func:`loads_pickle` (for stock xain-sdk 0.6 participants, which
``pickle.dumps`` an ndarray) first scans the opcodes, then unpickles with globals that resolve to checking
wrappers, never to numpy's or Python's own callables. Both check dtype and shape against the session's
:class:`ArraySpec` and refuse NaN/inf; whatever the payload, they allocate at most a small multiple of it.
"""

from __future__ import annotations

import ast
import io
import math
import pickle
import pickletools
import re
from dataclasses import dataclass
from typing import NoReturn, Protocol

import numpy as np

MAX_HEADER_BYTES = 4096
_NUMERIC_KINDS = "fiu"
_MAGIC = b"\x93NUMPY"
_HEADER_LENGTH_SIZE = {(1, 0): 2, (2, 0): 4}
_NUMERIC_DTYPE = re.compile(r"[<>|=]?[fiu][1-9][0-9]?")
_CHUNK = 1 << 20

# A pickled ndarray is a few dozen opcodes whatever its size: capping their number caps what the pickle
# machine itself (stack, marks, memo) can allocate. Counted bytes/str are checked against the data left.
_MAX_OPCODES = 128
_OPCODES = frozenset(
    ("PROTO", "FRAME", "STOP", "MARK", "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD")
    + ("MEMOIZE", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET")
    + ("NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1")
    + ("EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3")
    + ("SHORT_BINUNICODE", "BINUNICODE", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8")
)
_REFUSED_OPCODES = {
    "PERSID": "persistent id",
    "BINPERSID": "persistent id",
    "NEXT_BUFFER": "out-of-band buffer",
    "READONLY_BUFFER": "out-of-band buffer",
}
# (module, name) an ndarray pickle references: numpy 1.x and 2.x spellings, protocols 2 to 5.
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
    ("builtins", "bytes"): "bytes",
    ("__builtin__", "bytes"): "bytes",
}


class RefusedPayload(ValueError):
    """The payload is refused: nothing in it ran, no more than a small multiple of its size was allocated."""


@dataclass(frozen=True)
class ArraySpec:
    """What a session accepts: one dtype and one shape (``None``: any 1-D shape, before the first weights)."""

    dtype: str = "<f8"
    shape: tuple[int, ...] | None = None

    def check(self, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        """Refuse a dtype or shape other than the spec's (called before the array is allocated)."""
        if dtype != np.dtype(self.dtype):
            raise RefusedPayload(f"dtype {dtype.str!r}, expected {np.dtype(self.dtype).str!r}")
        if self.shape is None and len(shape) != 1:
            raise RefusedPayload(f"shape {shape}, expected a 1-D shape")
        if self.shape is not None and shape != self.shape:
            raise RefusedPayload(f"shape {shape}, expected {self.shape}")


class Readable(Protocol):
    """A body read by chunks: ``read(n)`` returns at most about ``n`` bytes, ``b""`` at the end."""

    def read(self, size: int, /) -> bytes: ...


def read_bounded(stream: Readable, max_bytes: int, name: str) -> bytes:
    """All of ``stream`` (a file, ``io.BytesIO``, botocore ``StreamingBody``, urllib3 response...).

    Reads 1 MiB chunks, never asking for more than one byte past ``max_bytes``, and refuses as soon as
    more than ``max_bytes`` arrived, whatever Content-Length said. The caller closes the stream.
    """
    chunks: list[bytes] = []
    received = 0
    while chunk := stream.read(min(_CHUNK, max_bytes + 1 - received)):
        received += len(chunk)
        if received > max_bytes:
            raise RefusedPayload(f"{name}: more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def encode(array: np.ndarray) -> bytes:
    """``.npy`` bytes (format 1.0, no pickle) of a numeric array, written C-contiguous."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, _numeric(array), version=(1, 0), allow_pickle=False)
    return buffer.getvalue()


def dumps_pickle(array: np.ndarray) -> bytes:
    """Protocol-4 pickle of a numeric array, as stock xain 0.6 participants read it (``pickle.loads``)."""
    return pickle.dumps(_numeric(array), protocol=4)


def decode(data: bytes, spec: ArraySpec, max_bytes: int) -> np.ndarray:
    """The array of ``.npy`` bytes (1.0 or 2.0) checked against ``spec``, or :class:`RefusedPayload`."""
    _check_size(data, max_bytes)
    if data[:6] != _MAGIC:
        raise RefusedPayload("not a .npy payload (bad magic)")
    version = tuple(data[6:8])
    if version not in _HEADER_LENGTH_SIZE:
        raise RefusedPayload(f".npy version {'.'.join(map(str, version))} (only 1.0 and 2.0)")
    start = 8 + _HEADER_LENGTH_SIZE[version]
    header_length = int.from_bytes(data[8:start], "little")
    if header_length > MAX_HEADER_BYTES:
        raise RefusedPayload(f".npy header of {header_length} bytes (limit {MAX_HEADER_BYTES})")
    end = start + header_length
    if len(data) < end:
        raise RefusedPayload(".npy header truncated")
    dtype, shape = _parse_header(data[start:end])
    return _build(memoryview(data)[end:], dtype, shape, spec)


def loads_pickle(data: bytes, spec: ArraySpec, max_bytes: int) -> np.ndarray:
    """The array of a stock xain 0.6 weight pickle, checked against ``spec``, or :class:`RefusedPayload`."""
    _check_size(data, max_bytes)
    _scan_pickle(data)
    try:
        result = _ArrayUnpickler(data, spec).load()
    except RefusedPayload:
        raise
    except Exception as exc:  # any other malformed stream is refused the same way
        raise RefusedPayload(f"not an array pickle ({type(exc).__name__}: {str(exc)[:120]})") from None
    if type(result) is not _PickledArray:
        raise RefusedPayload(f"pickle holds a {type(result).__name__}, not an array")
    if result.array is None:
        raise RefusedPayload("pickle holds an array without its state")
    return result.array


def _numeric(array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in _NUMERIC_KINDS:
        got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise TypeError(f"expected a numeric ndarray (kinds f, i, u), got {got}")
    return np.ascontiguousarray(array)


def _check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise RefusedPayload(f"payload of {len(data)} bytes exceeds the {max_bytes} byte limit")


def _numeric_dtype(text: object) -> np.dtype:
    if type(text) is str and _NUMERIC_DTYPE.fullmatch(text):
        try:
            return np.dtype(text)
        except TypeError:
            pass
    shown = repr(text[:40]) if type(text) is str else f"of type {type(text).__name__}"
    raise RefusedPayload(f"dtype {shown} is not a plain numeric dtype")


def _shape(value: object) -> tuple[int, ...]:
    if type(value) is not tuple or not all(type(n) is int and n >= 0 for n in value):
        raise RefusedPayload("shape is not a tuple of non-negative ints")
    return value


def _parse_header(raw: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    try:
        header = ast.literal_eval(raw.decode("latin1"))
    except Exception as exc:  # SyntaxError, ValueError, RecursionError...: the same unreadable header
        raise RefusedPayload(f".npy header is not a Python literal ({type(exc).__name__})") from None
    if type(header) is not dict or header.keys() != {"descr", "fortran_order", "shape"}:
        raise RefusedPayload(".npy header is not a dict of descr, fortran_order and shape")
    if header["fortran_order"] is not False:
        raise RefusedPayload(f".npy fortran_order is {header['fortran_order']!r:.40}, expected False")
    return _numeric_dtype(header["descr"]), _shape(header["shape"])


def _build(
    buffer: bytes | bytearray | memoryview, dtype: np.dtype, shape: tuple[int, ...], spec: ArraySpec
) -> np.ndarray:
    """The checked copy of exactly ``prod(shape)`` items of ``dtype`` in ``buffer``."""
    spec.check(dtype, shape)
    expected = math.prod(shape) * dtype.itemsize
    if len(buffer) != expected:
        problem = "truncated" if len(buffer) < expected else "trailing data"
        raise RefusedPayload(
            f"array data of {len(buffer)} bytes, expected {expected} for {shape} {dtype.str} ({problem})"
        )
    array = np.frombuffer(buffer, dtype).reshape(shape).copy()
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise RefusedPayload("array contains NaN or infinity")
    return array


def _scan_pickle(data: bytes) -> None:
    """Refuse opcodes an ndarray pickle never uses, too many opcodes, and anything after STOP."""
    stop = -1
    try:
        for count, (opcode, arg, pos) in enumerate(pickletools.genops(data)):
            if opcode.name not in _OPCODES:
                reason = _REFUSED_OPCODES.get(opcode.name, "not used by array pickles")
                raise RefusedPayload(f"refused pickle opcode {opcode.name} ({reason})")
            if count >= _MAX_OPCODES:
                raise RefusedPayload(f"pickle of more than {_MAX_OPCODES} opcodes")
            if opcode.name in {"BINPUT", "LONG_BINPUT"} and arg >= _MAX_OPCODES:
                raise RefusedPayload(f"refused pickle memo index {arg}")
            stop = pos
    except RefusedPayload:
        raise
    except ValueError as exc:  # pickletools: unknown opcode, truncated argument, no STOP
        raise RefusedPayload(f"malformed pickle ({str(exc)[:120]})") from None
    if stop != len(data) - 1:
        raise RefusedPayload(f"{len(data) - 1 - stop} bytes after the pickle's STOP")


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: only an argument of ``_reconstruct``, never a callable."""

    __slots__ = ()

    def __call__(self, *args: object) -> NoReturn:
        raise RefusedPayload("refused call of numpy.ndarray (only accepted as _reconstruct's argument)")


_NDARRAY = _NdarrayToken()


class _PickledDtype:
    """What ``numpy.dtype(name, align, copy)`` resolves to: a plain numeric dtype, byte order from BUILD."""

    __slots__ = ("dtype",)

    def __init__(self, name: object, align: object, copy: object) -> None:
        self.dtype = _numeric_dtype(name)  # align and copy only matter to structured dtypes: refused

    def __setstate__(self, state: object) -> None:
        if (
            type(state) is not tuple
            or len(state) != 8
            or state[0] != 3
            or state[1] not in ("<", ">", "|", "=")
            or state[2:] != (None, None, None, -1, -1, 0)
        ):
            raise RefusedPayload("refused dtype state (only plain numeric dtypes)")
        self.dtype = self.dtype.newbyteorder(state[1])


def _dtype(value: object) -> np.dtype:
    if type(value) is not _PickledDtype:
        raise RefusedPayload(f"array dtype is a {type(value).__name__}, not a numpy dtype")
    return value.dtype


class _PickledArray:
    """What ``_reconstruct``/``_frombuffer`` return; the array is built once, through :func:`_build`."""

    __slots__ = ("array", "spec")

    def __init__(self, spec: ArraySpec) -> None:
        self.spec = spec
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        """ndarray state ``(1, shape, dtype, is_fortran, rawdata)``: C order, raw bytes."""
        if self.array is not None:
            raise RefusedPayload("refused a second state for the array")
        if type(state) is not tuple or len(state) != 5 or state[0] != 1:
            raise RefusedPayload("refused array state (not numpy's (1, shape, dtype, False, bytes))")
        if state[3] is not False or type(state[4]) is not bytes:
            raise RefusedPayload("refused array state (Fortran order or data that is not bytes)")
        self.array = _build(state[4], _dtype(state[2]), _shape(state[1]), self.spec)


def _empty_bytes(*args: object) -> bytes:
    """``builtins.bytes``: only ``bytes()`` (protocol 2's empty data); ``bytes(n)`` would allocate n."""
    if args:
        raise RefusedPayload(f"refused builtins.bytes call with {len(args)} argument(s) (only bytes())")
    return b""


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves an ndarray pickle's globals to checking wrappers; builds at most one array."""

    def __init__(self, data: bytes, spec: ArraySpec) -> None:
        super().__init__(io.BytesIO(data))
        self.spec = spec
        self.encode_budget = len(data)  # _codecs.encode output left: memo reuse cannot amplify
        self.built = False

    def find_class(self, module: str, name: str) -> object:
        wrappers = {
            "_reconstruct": self._reconstruct,
            "_frombuffer": self._frombuffer,
            "ndarray": _NDARRAY,
            "dtype": _PickledDtype,
            "encode": self._encode,
            "bytes": _empty_bytes,
        }
        if (module, name) not in _GLOBALS:
            raise RefusedPayload(f"refused pickle global {module[:80]}.{name[:80]}")
        return wrappers[_GLOBALS[module, name]]

    def _new_array(self) -> _PickledArray:
        if self.built:
            raise RefusedPayload("refused a second array in the pickle")
        self.built = True
        return _PickledArray(self.spec)

    def _reconstruct(self, cls: object, shape: object, typecode: object) -> _PickledArray:
        if cls is not _NDARRAY or shape != (0,) or typecode != b"b":
            raise RefusedPayload("refused _reconstruct call (only numpy's (ndarray, (0,), b'b'))")
        return self._new_array()

    def _frombuffer(self, buffer: object, dtype: object, shape: object, order: object) -> _PickledArray:
        if type(buffer) not in (bytes, bytearray) or order != "C":
            raise RefusedPayload("refused _frombuffer call (only in-band data in C order)")
        result = self._new_array()
        result.array = _build(buffer, _dtype(dtype), _shape(shape), self.spec)
        return result

    def _encode(self, text: object, encoding: object) -> bytes:
        if type(text) is not str or encoding != "latin1":
            raise RefusedPayload("refused _codecs.encode call (only (str, 'latin1'))")
        self.encode_budget -= len(text)
        if self.encode_budget < 0:
            raise RefusedPayload("refused _codecs.encode calls producing more bytes than the payload")
        return text.encode("latin1")
