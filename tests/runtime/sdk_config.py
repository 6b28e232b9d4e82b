"""The xain-sdk ``Config`` of the stock SDK clients the runtime tests run (FL venv only, like them)."""

from __future__ import annotations

import os
from typing import Any

from xain_sdk.config import Config


def sdk_config(host: str, port: str, endpoint: str, bucket: str, **sections: Any) -> Config:
    """Coordinator ``host:port``, S3 ``endpoint``/``bucket`` with the keys of the AWS_* environment variables,
    plus any further config ``sections``."""
    return Config.from_unchecked_dict(
        {
            "coordinator": {"host": host, "port": int(port)},
            "storage": {
                "endpoint": endpoint,
                "bucket": bucket,
                "access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
                "secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
            },
            **sections,
        }
    )
