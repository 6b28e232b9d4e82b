"""S3 helpers shared by the consumer's storage hook and the providers' gateways (the FL runtime, which
stands alone, has its own)."""

from __future__ import annotations

import re
from typing import Any


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); ``ValueError`` naming the URL otherwise."""
    match = re.fullmatch(r"s3://([^/]+)/(.*[^/])", url)
    if not match:
        raise ValueError(f"expected an s3://bucket/key URL, got {url!r}")
    return match.group(1), match.group(2)


def client(endpoint_url: str, region_name: str, access_key: str, secret_key: str) -> Any:
    """A boto3 S3 client for an S3-compatible endpoint (path-style addressing, bounded retries, SigV4: also
    for presigned URLs, which then sign only the host, not the content type)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region_name,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
