"""S3 storage of the runtime: weight exchange (xain 0.6 key layout), data shards, and the final model.

Keys under the session prefix, as xain 0.6 lays them out: ``{round}/global`` (coordinator) and
``{round}/{participant uuid}`` (participants); stock xain-sdk participants know no prefix, so sessions with
stock participants use ``prefix ""``. Every weight read goes through :mod:`.safe_pickle`. Credentials
come only from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``; the endpoint from the config or
``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from typing import Any

import boto3
import numpy as np
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from numpy import ndarray
from xain_fl.coordinator.store import AbstractGlobalWeightsWriter, AbstractLocalWeightsReader
from xain_sdk.store import AbstractGlobalWeightsReader, AbstractLocalWeightsWriter

from airflow_nevermined_fl.runtime.config import StorageSpec
from airflow_nevermined_fl.runtime.safe_pickle import (
    DEFAULT_MAX_BYTES,
    RefusedPayload,
    dumps_array,
    loads_array,
)

MODEL_KEY = "model/final.npz"
METADATA_KEY = "model/metadata.json"


class StorageError(ValueError):
    """S3 is unusable (credentials, endpoint, bucket, object); the message names what to fix."""


def parse_s3_url(url: str, name: str = "url") -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    match = re.fullmatch(r"s3://([^/]+)/(.+)", url)
    if not match:
        raise StorageError(f"{name}: expected an s3://bucket/key URL, got {url!r}")
    return match.group(1), match.group(2)


def client(endpoint: str | None = None) -> Any:
    """An S3 client with credentials from the environment only (never from config files or profiles)."""
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise StorageError("S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set")
    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def check_bucket(s3: Any, bucket: str, name: str = "storage.bucket") -> None:
    """Fail with a precise message unless the bucket exists and the credentials may use it."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in {"404", "NoSuchBucket", "NotFound"}:
            raise StorageError(f"{name}: bucket {bucket!r} does not exist") from None
        if code in {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            raise StorageError(
                f"S3 credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY rejected for bucket {bucket!r}"
            ) from None
        raise StorageError(f"{name}: cannot use bucket {bucket!r} ({code})") from None
    except BotoCoreError as exc:
        raise StorageError(f"storage.endpoint: cannot reach S3 ({type(exc).__name__})") from None


def get_bytes(s3: Any, bucket: str, key: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Object bytes; refuses objects larger than ``max_bytes`` before downloading them."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if int(head["ContentLength"]) > max_bytes:
            raise RefusedPayload(f"s3://{bucket}/{key} is {head['ContentLength']} bytes (limit {max_bytes})")
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        raise StorageError(f"s3://{bucket}/{key}: cannot read ({code})") from None
    except BotoCoreError as exc:
        raise StorageError(f"s3://{bucket}/{key}: cannot read ({type(exc).__name__})") from None


def load_npz(data: bytes, name: str) -> dict[str, ndarray]:
    """Arrays of an ``.npz`` (``allow_pickle=False``: object arrays are refused)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise StorageError(f"{name}: not a readable .npz ({type(exc).__name__}: {exc})") from None


class SessionStorage:
    """One session's objects under ``spec.prefix`` in ``spec.bucket``."""

    def __init__(self, spec: StorageSpec, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.spec = spec
        self.max_bytes = max_bytes
        self.s3 = client(spec.endpoint)

    def check(self) -> None:
        check_bucket(self.s3, self.spec.bucket)

    def put(self, name: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.s3.put_object(
            Bucket=self.spec.bucket, Key=self.spec.key(name), Body=body, ContentType=content_type
        )

    def get_array(self, name: str) -> ndarray:
        """A pickled weight array through the allow-listed unpickler (missing/oversized -> refused)."""
        try:
            data = get_bytes(self.s3, self.spec.bucket, self.spec.key(name), self.max_bytes)
        except StorageError as exc:
            raise RefusedPayload(str(exc)) from None
        return loads_array(data, self.max_bytes)

    def put_array(self, name: str, weights: ndarray) -> None:
        self.put(name, dumps_array(weights))

    def write_final(self, arrays: dict[str, ndarray], metadata: dict[str, Any]) -> dict[str, str]:
        """Write the final model ``.npz`` and its metadata JSON; returns url, sha256, metadata_url."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        body = buffer.getvalue()
        sha256 = hashlib.sha256(body).hexdigest()
        self.put(MODEL_KEY, body)
        result = {
            "url": self.spec.url(MODEL_KEY),
            "sha256": sha256,
            "metadata_url": self.spec.url(METADATA_KEY),
        }
        document = {**metadata, "model": {"url": result["url"], "sha256": sha256, "format": "npz"}}
        self.put(METADATA_KEY, json.dumps(document, indent=2, sort_keys=True).encode(), "application/json")
        return result


class GlobalWeightsWriter(AbstractGlobalWeightsWriter):
    """Coordinator side: ``{round}/global`` as a plain-array pickle (what stock participants read)."""

    def __init__(self, storage: SessionStorage) -> None:
        self.storage = storage

    def write_weights(self, round: int, weights: ndarray) -> None:  # noqa: A002 - xain's signature
        self.storage.put_array(f"{round}/global", weights)


class LocalWeightsReader(AbstractLocalWeightsReader):
    """Coordinator side: a participant's upload, allow-list unpickled then checked by ``validate``."""

    def __init__(self, storage: SessionStorage, validate: Callable[[ndarray], None]) -> None:
        self.storage = storage
        self.validate = validate

    def read_weights(self, participant_id: str, round: int) -> ndarray:  # noqa: A002 - xain's signature
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", participant_id):
            raise RefusedPayload(f"participant id {participant_id[:80]!r} is not a uuid")
        weights = self.storage.get_array(f"{round}/{participant_id}")
        self.validate(weights)
        return weights


class LocalWeightsWriter(AbstractLocalWeightsWriter):
    """Participant side: ``{round}/{participant uuid}``."""

    def __init__(self, storage: SessionStorage) -> None:
        self.storage = storage

    def write_weights(self, participant_id: str, round: int, weights: ndarray) -> None:  # noqa: A002
        self.storage.put_array(f"{round}/{participant_id}", weights)


class GlobalWeightsReader(AbstractGlobalWeightsReader):
    """Participant side: ``{round}/global``, through the allow-listed unpickler as well."""

    def __init__(self, storage: SessionStorage) -> None:
        self.storage = storage

    def read_weights(self, round: int) -> ndarray:  # noqa: A002 - xain's signature
        return self.storage.get_array(f"{round}/global")
