"""S3 helpers shared by the consumer's storage hook and the providers' gateways (the FL runtime, which
stands alone, has its own)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection to the S3 endpoint (each attempt)."""
READ_TIMEOUT = 60.0
"""Seconds the S3 endpoint may stay silent while answering (each attempt)."""
MAX_ATTEMPTS = 3
"""botocore's ``retries.max_attempts``: retries after the first attempt (standard mode, backoff 2**n s)."""


class StorageError(RuntimeError):
    """An S3 call failed; the message names the endpoint, the call and the object, never a credential."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class StorageUnreachableError(StorageError):
    """The S3 endpoint could not be reached, or did not answer within the timeouts (after the retries)."""


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); ``ValueError`` naming the URL otherwise."""
    match = re.fullmatch(r"s3://([^/]+)/(.*[^/])", url)
    if not match:
        raise ValueError(f"expected an s3://bucket/key URL, got {url!r}")
    return match.group(1), match.group(2)


def client(
    endpoint_url: str,
    region_name: str,
    access_key: str,
    secret_key: str,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> Any:
    """A boto3 S3 client for an S3-compatible endpoint (path-style addressing, SigV4: also for presigned
    URLs, which then sign only the host, not the content type). Bounded: each attempt connects within
    ``connect_timeout`` s and reads within ``read_timeout`` s, with ``MAX_ATTEMPTS`` retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region_name,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": MAX_ATTEMPTS},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        ),
    )


@contextmanager
def translated(endpoint_url: str, call: str) -> Iterator[None]:
    """botocore errors of the ``with`` body as :class:`StorageError` naming the endpoint and ``call``: an
    error answer (``ClientError``) keeps its code; no answer is :class:`StorageUnreachableError`."""
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        message = error.get("Message") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise StorageError(f"S3 {endpoint_url}: {call}: {code or 'error'}: {message}", code) from None
    except (BotoConnectionError, HTTPClientError) as exc:
        raise StorageUnreachableError(
            f"S3 {endpoint_url}: unreachable while {call}: {type(exc).__name__}"
            f" (retried up to {MAX_ATTEMPTS} times)"
        ) from None
    except BotoCoreError as exc:
        raise StorageError(f"S3 {endpoint_url}: {call}: {type(exc).__name__}: {exc}") from None
