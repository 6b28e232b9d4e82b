"""One plain log format for our services and xain's structlog loggers (stderr, INFO by default)."""

from __future__ import annotations

import logging
import os

import structlog


def configure(level: str | None = None) -> None:
    """Route structlog through stdlib logging; drop the JSON handlers xain-sdk attaches at import."""
    logging.basicConfig(
        level=(level or os.environ.get("NVFL_LOG_LEVEL") or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True)],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("xain"):
            logging.getLogger(name).handlers.clear()
