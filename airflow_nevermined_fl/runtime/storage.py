"""Storage of the runtime: the weight exchange, data shards and the final model.

A secure session holds no storage key: its coordinator gets *grants* (presigned URLs, one per object and
method, issued by its provider's gateway) and hands each participant, per round, a grant to read the
global model and one to write its own upload (:class:`Grants`). An upload grant is a presigned POST whose
policy bounds the body's size (:func:`upload_limit`): the storage refuses anything larger. Objects under
the session prefix: ``global.npy``, ``uploads/<participant>.npy``, ``model/final.npz``,
``model/metadata.json``; weights are ``.npy`` read by :mod:`.arrays`, checked against the session's model
before anything is allocated.

A ``stock_sdk`` session (insecure) uses the bucket with the environment's keys
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, endpoint from the config or ``AWS_ENDPOINT_URL``) in xain
0.6's layout, ``{round}/global`` and ``{round}/{participant uuid}`` as pickles (:class:`BucketExchange`).
Every read is bounded while it streams (no size taken from a header).
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
import numpy as np
import requests
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from numpy import ndarray

from airflow_nevermined_fl.runtime import arrays
from airflow_nevermined_fl.runtime.arrays import ArraySpec, RefusedPayload
from airflow_nevermined_fl.runtime.config import CUSTOM_MODEL, ModelSpec, StorageSpec
from airflow_nevermined_fl.runtime.softmax import SoftmaxRegression

MODEL_KEY = "model/final.npz"
METADATA_KEY = "model/metadata.json"
GLOBAL_KEY = "global.npy"
NPY_PREAMBLE = 12  # magic, version and header length of a version 2.0 .npy
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
HTTP_TIMEOUT = (10.0, 60.0)  # connect, read
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between tries of a granted transfer
T = TypeVar("T")


def byte_limit(spec: ArraySpec) -> int:
    """The most bytes a weights object of ``spec`` may take (a stock pickle may double the raw size)."""
    if spec.shape is None:
        return DEFAULT_MAX_BYTES
    return 2 * math.prod(spec.shape) * np.dtype(spec.dtype).itemsize + 4096


def upload_limit(model: ModelSpec) -> int:
    """The most bytes a participant's upload may take: a float64 ``.npy`` of the built-in model's weights
    (a header of at most :data:`arrays.MAX_HEADER_BYTES`); for a custom model, whose shape is known only
    from its first upload, what the coordinator reads at most."""
    if model.name == CUSTOM_MODEL:
        return DEFAULT_MAX_BYTES
    weights = SoftmaxRegression(model.num_features, model.num_classes).size
    return NPY_PREAMBLE + arrays.MAX_HEADER_BYTES + weights * np.dtype(np.float64).itemsize


def upload_key(participant: str) -> str:
    """A participant's upload object in a secure session."""
    return f"uploads/{participant}.npy"


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
    """Object bytes, refused as soon as more than ``max_bytes`` arrived."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with body:
            return arrays.read_bounded(body, max_bytes, f"s3://{bucket}/{key}")
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        raise StorageError(f"s3://{bucket}/{key}: cannot read ({code})") from None
    except BotoCoreError as exc:
        raise StorageError(f"s3://{bucket}/{key}: cannot read ({type(exc).__name__})") from None


class _Unavailable(Exception):
    """A failure worth another try: no connection, a time-out, a 5xx answer."""


def _checked(
    response: requests.Response, name: str, what: str, ok: tuple[int, ...] = (200,)
) -> requests.Response:
    if response.status_code >= 500:
        raise _Unavailable(f"HTTP {response.status_code}")
    if response.status_code not in ok:
        raise StorageError(f"{name}: cannot {what} (HTTP {response.status_code})")
    return response


def _retried(call: Callable[[], T], name: str, what: str) -> T:
    """``call()``, tried again after :data:`RETRY_DELAYS` while the storage is unavailable (an outage of a
    few seconds is ridden out); then a StorageError naming ``name``, never the URL (a grant is a
    credential)."""
    tries = 0
    while True:
        try:
            return call()
        except (requests.ConnectionError, requests.Timeout, _Unavailable) as exc:
            if tries == len(RETRY_DELAYS):
                reason = str(exc) if isinstance(exc, _Unavailable) else type(exc).__name__
                raise StorageError(f"{name}: cannot {what} ({reason}, {tries + 1} tries)") from None
            time.sleep(RETRY_DELAYS[tries])
            tries += 1
        except requests.RequestException as exc:
            raise StorageError(f"{name}: cannot {what} ({type(exc).__name__})") from None


def http_get(url: str, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The body of a granted GET, bounded while it streams."""

    def get() -> bytes:
        with requests.get(url, stream=True, timeout=HTTP_TIMEOUT) as response:
            return arrays.read_bounded(_checked(response, name, "read").raw, max_bytes, name)

    return _retried(get, name, "read")


def http_put(url: str, name: str, body: bytes, content_type: str = "application/octet-stream") -> None:
    """A granted PUT."""

    def put() -> None:
        headers = {"Content-Type": content_type}
        _checked(requests.put(url, data=body, headers=headers, timeout=HTTP_TIMEOUT), name, "write")

    _retried(put, name, "write")


def http_post(form: str, name: str, body: bytes) -> None:
    """A granted POST: ``form`` is the JSON of a presigned POST (``{"url", "fields"}``), whose policy names
    the object and bounds the body's size (the storage refuses a larger one)."""
    try:
        grant = json.loads(form)
        url, fields = grant["url"], grant["fields"]
        if not isinstance(url, str) or not isinstance(fields, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise StorageError(f"{name}: malformed upload grant (expected a presigned POST)") from None

    def post() -> None:
        files = {"file": ("upload.npy", body, "application/octet-stream")}
        response = requests.post(url, data=fields, files=files, timeout=HTTP_TIMEOUT)
        _checked(response, name, "write", (200, 201, 204))

    _retried(post, name, "write")


def load_npz(data: bytes, name: str) -> dict[str, ndarray]:
    """Arrays of an ``.npz`` (``allow_pickle=False``: object arrays are refused)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise StorageError(f"{name}: not a readable .npz ({type(exc).__name__}: {exc})") from None


class Exchange(abc.ABC):
    """Where one session's weights and final model go: ``spec.prefix`` in ``spec.bucket``."""

    def __init__(self, spec: StorageSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def put(self, name: str, body: bytes, content_type: str = "application/octet-stream") -> None: ...

    @abc.abstractmethod
    def write_global(self, round_: int, weights: ndarray) -> None: ...

    @abc.abstractmethod
    def read_upload(self, participant: str, round_: int, spec: ArraySpec) -> ndarray: ...

    @abc.abstractmethod
    def read_initial(self, url: str) -> bytes:
        """The warm-start model file ``url`` (an ``s3://`` URL)."""

    def write_final(self, model: dict[str, ndarray], metadata: dict[str, Any]) -> dict[str, str]:
        """Write the final model ``.npz`` and its metadata JSON; returns url, sha256, metadata_url."""
        buffer = io.BytesIO()
        np.savez(buffer, **model)
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


class Grants(Exchange):
    """A secure session's storage: presigned URLs only (``grants.json``: ``{"objects": {name: {"get"|"put":
    url, "post": {"url", "fields"}}}, "initial_model": {"get": url}}``; uploads are written by POST), no
    key. Remembers the last global model's SHA-256, which the
    participants check what they read against."""

    def __init__(self, spec: StorageSpec, grants: dict[str, Any]) -> None:
        super().__init__(spec)
        self.objects: dict[str, dict[str, Any]] = grants.get("objects") or {}
        self.initial: dict[str, str] = grants.get("initial_model") or {}
        self.global_sha256 = ""

    @classmethod
    def load(cls, spec: StorageSpec, path: Path) -> Grants:
        try:
            grants = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StorageError(f"channel.grants: cannot read {path.name} ({type(exc).__name__})") from None
        expected = '{"objects": {name: {"get"|"put": url, "post": {"url", "fields"}}}, "initial_model": ...}'
        objects = grants.get("objects") if isinstance(grants, dict) else None
        sections = [*(objects or {}).values(), grants.get("initial_model") or {}] if objects else []
        if not isinstance(objects, dict) or not all(
            isinstance(section, dict) and all(_grant_ok(method, g) for method, g in section.items())
            for section in sections
        ):
            raise StorageError(f"channel.grants: expected {expected}")
        return cls(spec, grants)

    def url(self, name: str, method: str) -> str:
        """The grant of ``method`` on ``name``: a URL, or for "post" the JSON of a presigned POST."""
        try:
            grant = self.objects[name][method]
            return grant if isinstance(grant, str) else json.dumps(grant)
        except KeyError:
            raise StorageError(f"channel.grants: no {method.upper()} grant for {name}") from None

    def check(self, participants: list[str]) -> None:
        """Fail unless every object the session writes or reads has its grant."""
        for name, method in [
            (GLOBAL_KEY, "put"),
            (GLOBAL_KEY, "get"),
            (MODEL_KEY, "put"),
            (METADATA_KEY, "put"),
        ]:
            self.url(name, method)
        for participant in participants:
            self.url(upload_key(participant), "get")
            self.url(upload_key(participant), "post")

    def round_grants(self, participant: str) -> dict[str, str]:
        """What a selected participant needs for a round: read the global model, write its upload."""
        return {
            "global_url": self.url(GLOBAL_KEY, "get"),
            "global_sha256": self.global_sha256,
            "upload_form": self.url(upload_key(participant), "post"),
        }

    def put(self, name: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        http_put(self.url(name, "put"), name, body, content_type)

    def write_global(self, round_: int, weights: ndarray) -> None:
        body = arrays.encode(np.asarray(weights, dtype=np.float64))
        self.put(GLOBAL_KEY, body)
        self.global_sha256 = hashlib.sha256(body).hexdigest()

    def read_upload(self, participant: str, round_: int, spec: ArraySpec) -> ndarray:
        name = upload_key(participant)
        try:
            data = http_get(self.url(name, "get"), name, byte_limit(spec))
        except StorageError as exc:
            raise RefusedPayload(str(exc)) from None
        return arrays.decode(data, spec, byte_limit(spec))

    def read_initial(self, url: str) -> bytes:
        if "get" not in self.initial:
            raise StorageError("initial_model: no GET grant for it in channel.grants")
        return http_get(self.initial["get"], "initial_model")


def _grant_ok(method: str, grant: Any) -> bool:
    """A URL, or for "post" a presigned POST ``{"url": str, "fields": {str: str}}``."""
    if method != "post":
        return isinstance(grant, str)
    fields = grant.get("fields") if isinstance(grant, dict) else None
    return (
        isinstance(fields, dict)
        and isinstance(grant.get("url"), str)
        and all(isinstance(value, str) for value in fields.values())
    )


class BucketExchange(Exchange):
    """A ``stock_sdk`` session's storage: the bucket, with the environment's keys, in xain 0.6's layout."""

    def __init__(self, spec: StorageSpec, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(spec)
        self.max_bytes = max_bytes
        self.s3 = client(spec.endpoint)

    def check(self) -> None:
        check_bucket(self.s3, self.spec.bucket)

    def put(self, name: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.s3.put_object(
            Bucket=self.spec.bucket, Key=self.spec.key(name), Body=body, ContentType=content_type
        )

    def write_global(self, round_: int, weights: ndarray) -> None:
        self.put(f"{round_}/global", arrays.dumps_pickle(weights))

    def read_upload(self, participant: str, round_: int, spec: ArraySpec) -> ndarray:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", participant):
            raise RefusedPayload(f"participant id {participant[:80]!r} is not a uuid")
        try:
            data = get_bytes(
                self.s3, self.spec.bucket, self.spec.key(f"{round_}/{participant}"), byte_limit(spec)
            )
        except StorageError as exc:
            raise RefusedPayload(str(exc)) from None
        return arrays.loads_pickle(data, spec, byte_limit(spec))

    def read_initial(self, url: str) -> bytes:
        bucket, key = parse_s3_url(url, "initial_model")
        return get_bytes(self.s3, bucket, key)


class GlobalWeightsWriter:
    """xain's global weights writer on an :class:`Exchange`."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def write_weights(self, round: int, weights: ndarray) -> None:  # noqa: A002 - xain's signature
        self.exchange.write_global(round, weights)


class LocalWeightsReader:
    """xain's reader of a participant's upload on an :class:`Exchange`: refused unless it is a finite array
    of what ``spec()`` expects, checked before it is allocated."""

    def __init__(self, exchange: Exchange, spec: Callable[[], ArraySpec]) -> None:
        self.exchange = exchange
        self.spec = spec

    def read_weights(self, participant_id: str, round: int) -> ndarray:  # noqa: A002 - xain's signature
        return self.exchange.read_upload(participant_id, round, self.spec())
