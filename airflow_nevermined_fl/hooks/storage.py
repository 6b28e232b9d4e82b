"""Storage hook: the S3 bucket of a session (DDOs, FL weights, final models).

Connection type ``nvfl_storage``: login = access key id, password = secret access key,
extra ``{"endpoint_url": "http://127.0.0.1:8333", "bucket": "nvfl", "region_name": "us-east-1"}``, optional
``connect_timeout`` and ``read_timeout`` (s, per attempt; default 10 and 60, bounded retries). A failed call
is an :class:`~airflow_nevermined_fl.objectstore.StorageError` naming the endpoint and the object
(:class:`~airflow_nevermined_fl.objectstore.StorageUnreachableError` when the endpoint did not answer).
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from airflow_nevermined_fl import objectstore

CONN_TYPE = "nvfl_storage"


class StorageHook(BaseHook):
    """S3-compatible object storage (SeaweedFS locally, any S3 elsewhere) through boto3."""

    conn_name_attr = "storage_conn_id"
    default_conn_name = "nvfl_storage_default"
    conn_type = CONN_TYPE
    hook_name = "Nevermined FL storage (S3)"

    def __init__(self, storage_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.storage_conn_id = storage_conn_id

    def __repr__(self) -> str:
        return f"StorageHook(storage_conn_id={self.storage_conn_id!r})"

    @cached_property
    def _settings(self) -> dict[str, Any]:
        conn = self.get_connection(self.storage_conn_id)
        extra = conn.extra_dejson
        for field, value in (("login", conn.login), ("password", conn.password)):
            if not value:
                raise ValueError(f"storage connection {self.storage_conn_id!r}: {field} is required")
        for field in ("endpoint_url", "bucket"):
            if not extra.get(field):
                raise ValueError(f"storage connection {self.storage_conn_id!r}: extra.{field} is required")
        timeouts = {}
        for field, default in (
            ("connect_timeout", objectstore.CONNECT_TIMEOUT),
            ("read_timeout", objectstore.READ_TIMEOUT),
        ):
            value = extra.get(field, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(
                    f"storage connection {self.storage_conn_id!r}: extra.{field}: expected a positive number"
                    f" of seconds, got {value!r}"
                )
            timeouts[field] = float(value)
        return {
            "endpoint_url": extra["endpoint_url"],
            "bucket": extra["bucket"],
            "region_name": extra.get("region_name") or "us-east-1",
            "access_key": conn.login,
            "secret_key": conn.password,
            **timeouts,
        }

    @property
    def bucket(self) -> str:
        return self._settings["bucket"]

    @property
    def endpoint_url(self) -> str:
        return self._settings["endpoint_url"]

    def runtime_env(self) -> dict[str, str]:
        """Environment giving an FL workload access to this storage (secret: never log it)."""
        s = self._settings
        return {
            "AWS_ACCESS_KEY_ID": s["access_key"],
            "AWS_SECRET_ACCESS_KEY": s["secret_key"],
            "AWS_ENDPOINT_URL": s["endpoint_url"],
            "AWS_DEFAULT_REGION": s["region_name"],
        }

    @cached_property
    def client(self) -> Any:
        s = self._settings
        return objectstore.client(
            s["endpoint_url"],
            s["region_name"],
            s["access_key"],
            s["secret_key"],
            connect_timeout=s["connect_timeout"],
            read_timeout=s["read_timeout"],
        )

    def _call(self, what: str) -> Any:
        """Context of one S3 call: its botocore errors become ``StorageError`` naming it."""
        return objectstore.translated(self.endpoint_url, what)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        with self._call(f"writing {self.url(key)}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return self.url(key)

    def get_bytes(self, url: str) -> bytes:
        bucket, key = objectstore.split_url(url)
        with self._call(f"reading {url}"):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put_json(self, key: str, data: Any) -> str:
        return self.put_bytes(key, json.dumps(data, indent=2, sort_keys=True).encode(), "application/json")

    def get_json(self, url: str) -> Any:
        return json.loads(self.get_bytes(url))

    def exists(self, url: str) -> bool:
        bucket, key = objectstore.split_url(url)
        try:
            with self._call(f"checking {url}"):
                self.client.head_object(Bucket=bucket, Key=key)
        except objectstore.StorageError as err:
            if err.code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def sha256(self, url: str) -> str:
        return hashlib.sha256(self.get_bytes(url)).hexdigest()

    def copy(self, src_url: str, key: str) -> str:
        bucket, src_key = objectstore.split_url(src_url)
        with self._call(f"copying {src_url} to {self.url(key)}"):
            self.client.copy_object(
                Bucket=self.bucket, Key=key, CopySource={"Bucket": bucket, "Key": src_key}
            )
        return self.url(key)
