"""The compute time-out of a session's agreements, in blocks, derived from the session's own time-out.

The consumer can refund an unreleased payment only once its agreement's compute condition timed out, so
that time-out must outlast any honest session: ``session_timeout`` plus a margin (10 % and 60 s), counted
in the chain's block time. ``block_time`` is a lower bound of the seconds between blocks (the chain's
slot or interval: 12 on Ethereum, 1 on the embedded chain); the consumer derives the time-out from it and
each provider's gateway refuses an agreement whose time LEFT (its creation block + time-out − the current
block) does not cover the session from now on: the session's time-out plus the time to settle
(:func:`blocks_needed`). The margin of the first over the second is what the steps between the lock and a
gateway's ``execute`` may take.
"""

from __future__ import annotations

import math

MARGIN_FRACTION = 0.1
MARGIN_SECONDS = 60.0
SETTLE_SECONDS = 10.0
DEFAULT_BLOCK_TIME = 12.0


def _blocks(seconds: float, session_timeout: float, block_time: float) -> int:
    if not session_timeout > 0 or not block_time > 0:
        raise ValueError(f"session_timeout and block_time must be > 0, got {session_timeout}, {block_time}")
    return math.ceil(seconds / block_time)


def compute_time_out(session_timeout: float, block_time: float) -> int:
    """Blocks after which a session's payment may be refunded (what the consumer's agreements state)."""
    seconds = session_timeout * (1 + MARGIN_FRACTION) + MARGIN_SECONDS
    return _blocks(seconds, session_timeout, block_time)


def blocks_needed(session_timeout: float, block_time: float) -> int:
    """Blocks a gateway needs left on an agreement's compute condition when it launches: the session's
    time-out and the time to settle (fewer than :func:`compute_time_out`)."""
    return _blocks(session_timeout + SETTLE_SECONDS, session_timeout, block_time)
