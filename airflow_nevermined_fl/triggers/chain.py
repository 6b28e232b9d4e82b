"""Waits on the chain, in the triggerer: until a block number is passed (e.g. an agreement's time-out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class BlockTrigger(BaseTrigger):
    """Fire once the chain of ``consumer_conn_id`` is past block ``block``, or after ``timeout`` s. It
    holds no secret: the connection is read in the triggerer, and only the block number is asked for."""

    def __init__(self, consumer_conn_id: str, block: int, timeout: float, poll_interval: float = 2.0) -> None:
        super().__init__()
        self.consumer_conn_id = consumer_conn_id
        self.block = block
        self.timeout = timeout
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        fields = ("consumer_conn_id", "block", "timeout", "poll_interval")
        return f"{type(self).__module__}.{type(self).__qualname__}", {f: getattr(self, f) for f in fields}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_nevermined_fl.contracts.errors import ChainError
        from airflow_nevermined_fl.operators.base import nevermined

        hook = await sync_to_async(nevermined)(self.consumer_conn_id)
        current = sync_to_async(lambda: hook.get_conn().w3.eth.block_number)
        deadline, last_error = time.monotonic() + self.timeout, None
        while time.monotonic() < deadline:
            try:
                number = await current()
            except (ChainError, OSError, ValueError) as err:  # a lost RPC: keep asking until the deadline
                last_error = err
            else:
                if number > self.block:
                    yield TriggerEvent({"status": "success", "block": number})
                    return
            await asyncio.sleep(self.poll_interval)
        message = f"chain not past block {self.block} within {self.timeout:.0f}s"
        yield TriggerEvent({"status": "error", "message": f"{message} (last error: {last_error})"})
