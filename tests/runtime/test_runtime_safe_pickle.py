"""The allow-listed unpickler: plain numeric arrays in, everything else refused without running it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from airflow_nevermined_fl.runtime.safe_pickle import RefusedPayload, dumps_array, loads_array


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({self.marker!r}, 'w').write('executed')",)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize(
    "array", [np.arange(12.0).reshape(3, 4), np.arange(5, dtype=np.int32), np.float32([0.5]), np.empty(0)]
)
def test_numeric_arrays_round_trip_every_protocol(array: np.ndarray, protocol: int) -> None:
    restored = loads_array(pickle.dumps(array, protocol=protocol))
    assert restored.dtype == array.dtype and np.array_equal(restored, array)


def test_dumps_array_is_readable_by_stock_pickle() -> None:
    weights = np.linspace(0, 1, 7)
    assert np.array_equal(pickle.loads(dumps_array(weights)), weights)
    with pytest.raises(TypeError):
        dumps_array(np.array(["a"], dtype=object))


def test_code_execution_payload_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = pickle.dumps(_Exploit(marker))
    with pytest.raises(RefusedPayload, match="builtins.exec"):
        loads_array(data)
    assert not marker.exists()
    # Control: the same bytes do run code under plain pickle, so the check above is meaningful.
    pickle.loads(data)
    assert marker.read_text() == "executed"


@pytest.mark.parametrize(
    "value",
    [
        {"weights": np.zeros(3)},
        [1.0, 2.0],
        np.array([{"a": 1}], dtype=object),
        np.array(["text"]),
        np.bool_(True),
        np.float64(1.0),
    ],
)
def test_non_array_or_non_numeric_payloads_are_refused(value: object) -> None:
    with pytest.raises(RefusedPayload):
        loads_array(pickle.dumps(value))


def test_malformed_and_oversized_payloads_are_refused() -> None:
    with pytest.raises(RefusedPayload, match="not a pickled array"):
        loads_array(b"\x80\x04garbage")
    with pytest.raises(RefusedPayload, match="limit"):
        loads_array(pickle.dumps(np.zeros(1000)), max_bytes=100)
