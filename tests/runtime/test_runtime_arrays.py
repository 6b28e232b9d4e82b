"""Weight codecs: ``.npy`` parsed before allocating, xain pickles through checking wrappers, bounded reads.

Every refusal names its reason; code-execution payloads must leave no marker file, amplification payloads
must leave a small allocation peak (``tracemalloc``). Controls run the same bytes through plain ``pickle``
to show each payload is a real exploit.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import shlex
import struct
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from numpy._core.multiarray import _reconstruct
from numpy._core.numeric import _frombuffer

from airflow_nevermined_fl.runtime.arrays import (
    MAX_HEADER_BYTES,
    ArraySpec,
    RefusedPayload,
    decode,
    dumps_pickle,
    encode,
    loads_pickle,
    read_bounded,
)

LIMIT = 1 << 24
MiB = 1 << 20
PROTOCOLS = [2, 3, 4, 5]
FORMATS: dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes, ArraySpec, int], np.ndarray]]] = {
    "npy": (encode, decode),
    **{f"pickle{p}": (partial(pickle.dumps, protocol=p), loads_pickle) for p in PROTOCOLS},
}
ARRAYS = [
    np.arange(7.0),
    np.empty(0),
    np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    np.arange(24, dtype=np.int64).reshape(2, 3, 4),
]
SPEC_2X3 = ArraySpec("<f8", (2, 3))


def spec_of(array: np.ndarray) -> ArraySpec:
    return ArraySpec(array.dtype.str, array.shape)


class Reduce:
    """Pickles as ``func(*args)``, followed by BUILD with ``state`` when one is given."""

    def __init__(self, func: object, args: tuple[object, ...], state: object = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[object, ...]:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def npy(header: str, body: bytes = b"", version: int = 1) -> bytes:
    """Hand-built ``.npy`` bytes: magic, version, header length, header, body."""
    raw = header.encode("latin1")
    length = struct.pack("<H" if version == 1 else "<I", len(raw))
    return b"\x93NUMPY" + bytes([version, 0]) + length + raw + body


def unicode_op(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def call_pickle(module: str, name: str, arg: str, protocol: int) -> bytes:
    """Hand-built pickle of ``module.name(arg)``: GLOBAL (protocol 2) or STACK_GLOBAL (protocol 4)."""
    if protocol == 2:
        callee = b"c" + f"{module}\n{name}\n".encode()
    else:
        callee = unicode_op(module) + unicode_op(name) + b"\x93"
    return b"\x80" + bytes([protocol]) + callee + unicode_op(arg) + b"\x85R."


def refused_peak(load: Callable[[], object], match: str) -> int:
    """Peak bytes traced while ``load`` is refused with a message matching ``match``."""
    tracemalloc.start()
    try:
        with pytest.raises(RefusedPayload, match=match):
            load()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def unpickling_peak(data: bytes) -> int:
    """Peak bytes traced while plain ``pickle.loads`` reads ``data`` (the control of an exploit)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(pickle.UnpicklingError):
            pickle.loads(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- round trips and writers ------------------------------------------------------------------------


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(fmt: str, array: np.ndarray) -> None:
    write, read = FORMATS[fmt]
    restored = read(write(array), spec_of(array), LIMIT)
    assert type(restored) is np.ndarray and restored.dtype == array.dtype
    assert np.array_equal(restored, array) and restored.flags.owndata and restored.flags.writeable


def numpy1_spelling(data: bytes) -> bytes:
    """The same pickle with the module names numpy 1.x writes (``numpy.core``)."""
    if data[1] < 4:  # GLOBAL opcodes: newline-terminated text
        return data.replace(b"numpy._core.", b"numpy.core.")
    module = b"numeric" if data[1] == 5 else b"multiarray"
    old, new = b"numpy._core." + module, b"numpy.core." + module
    data = data.replace(bytes([len(old)]) + old, bytes([len(new)]) + new)
    frame = int.from_bytes(data[3:11], "little") - 1  # the FRAME holding the shorter name
    return data[:3] + frame.to_bytes(8, "little") + data[11:]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickles_written_by_numpy_1_are_read(protocol: int) -> None:
    data = numpy1_spelling(pickle.dumps(np.arange(5.0), protocol=protocol))
    assert b"numpy.core." in data and b"numpy._core" not in data
    assert np.array_equal(loads_pickle(data, ArraySpec(), LIMIT), np.arange(5.0))


@pytest.mark.parametrize("fmt", FORMATS)
def test_spec_without_shape_accepts_any_1d_array_only(fmt: str) -> None:
    write, read = FORMATS[fmt]
    assert np.array_equal(read(write(np.arange(5.0)), ArraySpec(), LIMIT), np.arange(5.0))
    with pytest.raises(RefusedPayload, match=r"shape \(2, 3\), expected a 1-D shape"):
        read(write(np.ones((2, 3))), ArraySpec(), LIMIT)


def test_writers_are_read_by_stock_readers() -> None:
    weights = np.linspace(0, 1, 12).reshape(3, 4)[:, ::2]  # not contiguous: written C-contiguous
    npy_bytes, pickle_bytes = encode(weights), dumps_pickle(weights)
    assert npy_bytes[6:8] == b"\x01\x00" and pickle_bytes[:2] == b"\x80\x04"
    assert np.array_equal(np.load(io.BytesIO(npy_bytes), allow_pickle=False), weights)
    assert np.array_equal(pickle.loads(pickle_bytes), weights)
    assert np.array_equal(decode(npy_bytes, spec_of(weights), LIMIT), weights)
    assert np.array_equal(loads_pickle(pickle_bytes, spec_of(weights), LIMIT), weights)


@pytest.mark.parametrize("writer", [encode, dumps_pickle])
@pytest.mark.parametrize(
    "value",
    [
        np.array([{"a": 1}], dtype=object),
        np.array(["text"]),
        np.array([True]),
        np.array([1j]),
        np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")]),
        [1.0, 2.0],
    ],
    ids=["object", "str", "bool", "complex", "structured", "list"],
)
def test_writers_refuse_non_numeric_values(writer: Callable[[np.ndarray], bytes], value: object) -> None:
    with pytest.raises(TypeError, match="expected a numeric ndarray"):
        writer(value)  # type: ignore[arg-type]


# --- refusals common to both formats ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "spec", "match"),
    [
        (np.arange(9.0), ArraySpec("<f8", (10,)), r"shape \(9,\), expected \(10,\)"),
        (np.ones((10, 1)), ArraySpec("<f8", (10,)), r"shape \(10, 1\), expected \(10,\)"),
        (np.ones(10, dtype=np.float32), ArraySpec("<f8", (10,)), "dtype '<f4', expected '<f8'"),
        (np.arange(10), ArraySpec("<f8", (10,)), "dtype '<i8', expected '<f8'"),
        (np.ones(10, dtype=">f8"), ArraySpec("<f8", (10,)), "dtype '>f8', expected '<f8'"),
    ],
    ids=["length", "ndim", "float32", "int64", "big-endian"],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_shape_or_dtype_is_refused(fmt: str, array: np.ndarray, spec: ArraySpec, match: str) -> None:
    write, read = FORMATS[fmt]
    with pytest.raises(RefusedPayload, match=match):
        read(write(array), spec, LIMIT)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fmt", FORMATS)
def test_nan_and_inf_are_refused(fmt: str, bad: float) -> None:
    write, read = FORMATS[fmt]
    with pytest.raises(RefusedPayload, match="NaN or infinity"):
        read(write(np.array([1.0, bad, 2.0])), ArraySpec(), LIMIT)


@pytest.mark.parametrize("fmt", FORMATS)
def test_payload_over_the_limit_is_refused_before_parsing(fmt: str) -> None:
    write, read = FORMATS[fmt]
    data = write(np.zeros(100))
    with pytest.raises(RefusedPayload, match=f"payload of {len(data)} bytes exceeds the 100 byte limit"):
        read(data, ArraySpec(), 100)
    with pytest.raises(RefusedPayload, match="exceeds the 10 byte limit"):
        read(b"not even a header", ArraySpec(), 10)


# --- .npy -----------------------------------------------------------------------------------------


def header(descr: str = "'<f8'", fortran_order: str = "False", shape: str = "(2, 3)") -> str:
    """An ``.npy`` header dict's text, fields given as Python source."""
    return f"{{'descr': {descr}, 'fortran_order': {fortran_order}, 'shape': {shape}, }}"


def saved(array: np.ndarray) -> bytes:
    """What ``np.save`` writes (object arrays pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


NPY_2X3 = encode(np.ones((2, 3)))
LONG_HEADER = header() + " " * 5000
HUGE_HEADER = header() + " " * 70000


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(saved(np.array([None, {}], dtype=object)), r"dtype '\|O' is not a plain", id="object"),
        pytest.param(npy(header(descr="'|O'")), r"dtype '\|O' is not a plain numeric", id="object-hdr"),
        pytest.param(saved(np.zeros(2, "<f8,<i4")), "dtype of type list is not a plain", id="structured"),
        pytest.param(saved(np.zeros(2, [("a", "<f8", (3,))])), "dtype of type list", id="subarray-field"),
        pytest.param(npy(header(descr="('<f8', (3,))")), "dtype of type tuple", id="subarray-descr"),
        pytest.param(npy(header(descr="'|V48'")), "dtype '|V48' is not a plain numeric dtype", id="void"),
        pytest.param(saved(np.array(["abc"])), "dtype '<U3' is not a plain numeric dtype", id="str"),
        pytest.param(saved(np.array([1j])), "dtype '<c16' is not a plain numeric dtype", id="complex"),
        pytest.param(saved(np.array([True])), r"dtype '\|b1' is not a plain numeric dtype", id="bool"),
        pytest.param(
            saved(np.ones((2, 3), order="F")), "fortran_order is True, expected False", id="fortran"
        ),
        pytest.param(npy(header(fortran_order="0")), "fortran_order is 0, expected False", id="fortran-0"),
        pytest.param(NPY_2X3[:-1], r"47 bytes, expected 48 for \(2, 3\) <f8 \(truncated\)", id="truncated"),
        pytest.param(NPY_2X3 + b"\0", r"49 bytes, expected 48 .* \(trailing data\)", id="trailing"),
        pytest.param(NPY_2X3[:40], ".npy header truncated", id="header-truncated"),
        pytest.param(
            npy(LONG_HEADER), f"header of {len(LONG_HEADER)} bytes \\(limit {MAX_HEADER_BYTES}", id="long"
        ),
        pytest.param(npy(HUGE_HEADER, version=2), f"header of {len(HUGE_HEADER)} bytes", id="long-v2"),
        pytest.param(b"PK\x03\x04" + bytes(60), "not a .npy payload \\(bad magic\\)", id="npz"),
        pytest.param(npy(header(), version=3), r"\.npy version 3\.0 \(only 1\.0 and 2\.0\)", id="v3"),
        pytest.param(npy(header()[:-1] + "'x': 1}"), "not a dict of descr, fortran_order", id="extra-key"),
        pytest.param(npy("['<f8', False, (2, 3)]"), "not a dict of descr, fortran_order", id="list"),
        pytest.param(npy(header(shape="(-2, -3)")), "shape is not a tuple of non-negative", id="negative"),
        pytest.param(npy(header(shape="(2.0, 3)")), "shape is not a tuple of non-negative", id="float"),
        pytest.param(npy(header(shape="[2, 3]")), "shape is not a tuple of non-negative", id="list-shape"),
        pytest.param(npy(header(shape="(True, 3)")), "shape is not a tuple of non-negative", id="bool-shape"),
        pytest.param(npy(header(shape="(" * 300 + ")" * 300)), "not a Python literal", id="deep-nesting"),
    ],
)
def test_malformed_npy_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(RefusedPayload, match=match):
        decode(data, SPEC_2X3, LIMIT)


def test_npy_header_code_is_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    code = f"open({str(marker)!r}, 'w').write('executed')"
    with pytest.raises(RefusedPayload, match="not a Python literal"):
        decode(npy(header(descr=code)), ArraySpec(), LIMIT)
    assert not marker.exists()


def test_npy_declaring_a_huge_shape_allocates_nothing() -> None:
    data = npy(header(shape="(8388608,)"))
    peak = refused_peak(lambda: decode(data, ArraySpec(), LIMIT), r"0 bytes, expected 67108864")
    assert peak < MiB


# --- pickles: code execution ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(
    ("module", "name", "language"),
    [
        ("os", "system", "shell"),
        ("posix", "system", "shell"),
        ("subprocess", "getoutput", "shell"),
        ("builtins", "eval", "python"),
        ("builtins", "exec", "python"),
    ],
)
def test_code_execution_is_refused_and_never_runs(
    tmp_path: Path, module: str, name: str, language: str, protocol: int
) -> None:
    marker = tmp_path / "marker"
    if language == "shell":
        code = f"touch {shlex.quote(str(marker))}"
    else:
        code = f"open({str(marker)!r}, 'w').write('executed')"
    data = call_pickle(module, name, code, protocol)
    with pytest.raises(RefusedPayload, match=f"refused pickle global {module}.{name}"):
        loads_pickle(data, ArraySpec(), LIMIT)
    assert not marker.exists()
    pickle.loads(data)  # control: plain pickle runs it
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_persistent_ids_are_refused(protocol: int) -> None:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return "weights" if isinstance(obj, np.ndarray) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=protocol).dump(np.arange(3.0))
    with pytest.raises(RefusedPayload, match=r"refused pickle opcode (BIN)?PERSID \(persistent id\)"):
        loads_pickle(buffer.getvalue(), ArraySpec(), LIMIT)


@pytest.mark.parametrize("readonly", [False, True])
def test_protocol_5_out_of_band_buffers_are_refused(readonly: bool) -> None:
    array = np.arange(3.0)
    array.flags.writeable = not readonly
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
    assert buffers
    with pytest.raises(RefusedPayload, match=r"refused pickle opcode NEXT_BUFFER \(out-of-band buffer\)"):
        loads_pickle(data, ArraySpec(), LIMIT)


# --- pickles: allocation ----------------------------------------------------------------------------

EMPTY = (np.ndarray, (0,), b"b")  # numpy's own _reconstruct arguments


def reduced(func: object, args: tuple[object, ...], state: object = None, protocol: int = 4) -> bytes:
    return pickle.dumps(Reduce(func, args, state), protocol=protocol)


def test_uninitialised_ndarray_constructor_is_refused() -> None:
    data = reduced(np.ndarray, ((8388608,), "f8"), protocol=2)
    peak = refused_peak(lambda: loads_pickle(data, ArraySpec(), LIMIT), "refused call of numpy.ndarray")
    assert peak < MiB
    assert pickle.loads(data).nbytes == 64 * MiB  # control: a 64 MiB allocation from a tiny payload


def test_reconstruct_is_only_accepted_in_numpys_form() -> None:
    data = reduced(_reconstruct, (np.ndarray, (8388608,), b"b"))
    peak = refused_peak(lambda: loads_pickle(data, ArraySpec(), LIMIT), r"refused _reconstruct call")
    assert peak < MiB


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytes_amplification_is_refused(protocol: int) -> None:
    state = (1, (8388608,), np.dtype("f8"), False, Reduce(bytes, (67108864,)))
    data = reduced(_reconstruct, EMPTY, state, protocol)
    assert len(data) < 300
    match = r"refused builtins\.bytes call with 1 argument\(s\) \(only bytes\(\)\)"
    peak = refused_peak(lambda: loads_pickle(data, ArraySpec(), LIMIT), match)
    assert peak < MiB
    assert pickle.loads(data).nbytes == 64 * MiB  # control: plain pickle builds the 64 MiB array


def test_codecs_encode_memo_amplification_is_refused() -> None:
    size, copies = 100_000, 20
    call = b"h\x00h\x01h\x02\x86R"  # _codecs.encode(text, 'latin1'), both from the memo
    prologue = b"\x80\x02c_codecs\nencode\nq\x00" + unicode_op("a" * size) + b"q\x01"
    data = prologue + unicode_op("latin1") + b"q\x02(" + call * copies + b"t."
    match = "refused _codecs.encode calls producing more bytes than the payload"
    peak = refused_peak(lambda: loads_pickle(data, ArraySpec(), LIMIT), match)
    assert peak < 5 * len(data)
    assert sum(map(len, pickle.loads(data))) == size * copies  # control: 20x the payload


def counted(opcode: bytes, size: int) -> bytes:
    """A protocol-5 pickle whose counted-bytes opcode declares ``size`` bytes and carries one."""
    return b"\x80\x05" + opcode + struct.pack("<Q", size) + b"x."


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(
            counted(b"\x8e", 1 << 27), r"malformed pickle \(expected 134217728 bytes", id="BINBYTES8"
        ),
        pytest.param(counted(b"\x96", 1 << 27), r"malformed pickle \(expected 134217728 by", id="BYTEARRAY8"),
        pytest.param(
            b"\x80\x04Nr" + struct.pack("<I", 1 << 23) + b".", "memo index 8388608", id="LONG_BINPUT"
        ),
    ],
)
def test_declared_sizes_cannot_make_the_unpickler_allocate(data: bytes, match: str) -> None:
    assert refused_peak(lambda: loads_pickle(data, ArraySpec(), LIMIT), match) < MiB
    assert unpickling_peak(data) > 100 * MiB  # control: 15 bytes, 128 MiB


# --- pickles: shapes of payload ---------------------------------------------------------------------

OBJECT_ARRAY = np.array([None, 1.0], dtype=object)
FORTRAN = np.ones((2, 3), order="F")
SUBARRAY_STATE = (3, "<", ("f8", (2,)), None, None, -1, -1, 0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        *[
            pytest.param(pickle.dumps(OBJECT_ARRAY, protocol=p), "opcode EMPTY_LIST", id=f"object-p{p}")
            for p in PROTOCOLS
        ],
        pytest.param(reduced(np.dtype, ("O8", False, True)), "dtype 'O8' is not a plain", id="object-dtype"),
        pytest.param(pickle.dumps(np.array(["text"])), "dtype 'U4' is not a plain numeric", id="str"),
        pytest.param(pickle.dumps(np.zeros(2, "<f8,<i4")), "opcode EMPTY_DICT", id="structured"),
        pytest.param(pickle.dumps(np.zeros(2, [("a", "<f8", (3,))])), "opcode EMPTY_DICT", id="subarray"),
        pytest.param(reduced(np.dtype, ("V16", False, True)), "dtype 'V16' is not a plain", id="void"),
        pytest.param(
            reduced(np.dtype, ("f8", False, True), SUBARRAY_STATE),
            r"refused dtype state \(only plain numeric dtypes\)",
            id="subarray-state",
        ),
        *[
            pytest.param(
                pickle.dumps(FORTRAN, protocol=p), r"array state \(Fortran order", id=f"fortran-p{p}"
            )
            for p in (2, 3, 4)
        ],
        pytest.param(
            pickle.dumps(FORTRAN, protocol=5),
            r"refused _frombuffer call \(only in-band data in C order\)",
            id="fortran-p5",
        ),
        pytest.param(
            reduced(_frombuffer, (bytearray(8), np.dtype("f8"), (3,), "C"), protocol=5),
            r"array data of 8 bytes, expected 24 for \(3,\) <f8 \(truncated\)",
            id="frombuffer-short",
        ),
        pytest.param(
            reduced(_frombuffer, (bytearray(32), np.dtype("f8"), (3,), "C"), protocol=5),
            r"array data of 32 bytes, expected 24 for \(3,\) <f8 \(trailing data\)",
            id="frombuffer-long",
        ),
        pytest.param(
            reduced(_reconstruct, EMPTY, (1, (3,), "f8", False, bytes(24))),
            "array dtype is a str, not a numpy dtype",
            id="dtype-not-a-dtype",
        ),
        pytest.param(reduced(_reconstruct, EMPTY), "pickle holds an array without its state", id="no-state"),
        pytest.param(pickle.dumps((np.ones(3), np.ones(3))), "refused a second array", id="two-arrays"),
        pytest.param(
            pickle.dumps(np.ma.masked_array([1.0, 2.0])),
            "refused pickle global numpy.ma.core._mareconstruct",
            id="masked",
        ),
        pytest.param(pickle.dumps(np.float64(1.0)), "global numpy._core.multiarray.scalar", id="scalar"),
        pytest.param(pickle.dumps({"weights": np.zeros(3)}), "opcode EMPTY_DICT", id="dict"),
        pytest.param(pickle.dumps([1.0, 2.0]), "refused pickle opcode EMPTY_LIST", id="list"),
        pytest.param(pickle.dumps(7), "pickle holds a int, not an array", id="int"),
        pytest.param(
            pickle.dumps(np.ones(3))[:-1],
            r"malformed pickle \(pickle exhausted before seeing STOP\)",
            id="truncated",
        ),
        pytest.param(pickle.dumps(np.ones(3)) + b"\0", "1 bytes after the pickle's STOP", id="trailing"),
        pytest.param(b"\x80\x04" + b"N" * 200 + b".", "more than 128 opcodes", id="too-many-opcodes"),
        pytest.param(b"\x80\x04garbage", r"malformed pickle \(no newline found", id="garbage"),
        pytest.param(b"\x80\x02(l.", r"opcode LIST \(not used by array pickles\)", id="text-list"),
    ],
)
def test_non_array_pickles_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(RefusedPayload, match=match):
        loads_pickle(data, ArraySpec(), LIMIT)


# --- bounded reads ----------------------------------------------------------------------------------


class Endless:
    """A body that never ends; counts the bytes handed out and the largest read asked for."""

    def __init__(self) -> None:
        self.consumed = 0
        self.largest = 0

    def read(self, size: int) -> bytes:
        self.consumed += size
        self.largest = max(self.largest, size)
        return bytes(size)


def test_read_bounded_stops_just_past_the_limit() -> None:
    stream = Endless()
    with pytest.raises(RefusedPayload, match=f"s3://b/1/global: more than {5 * MiB} bytes"):
        read_bounded(stream, 5 * MiB, "s3://b/1/global")
    assert stream.consumed == 5 * MiB + 1 and stream.largest <= MiB


def test_read_bounded_ignores_a_lying_content_length() -> None:
    botocore_response = pytest.importorskip("botocore.response")
    body = botocore_response.StreamingBody(io.BytesIO(bytes(100)), 10)
    with pytest.raises(RefusedPayload, match="weights: more than 50 bytes"):
        read_bounded(body, 50, "weights")


@pytest.mark.parametrize("size", [0, 1, 50, 3 * MiB])
def test_read_bounded_returns_bodies_up_to_the_limit(size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    assert read_bounded(io.BytesIO(data), 3 * MiB, "weights") == data
