"""The compute time-out of a session's agreements, in blocks, derived from the session's own time-out.

The consumer can refund an unreleased payment only once its agreement's compute condition timed out, so
that time-out must outlast any honest session: ``session_timeout`` plus a margin (10 % and 60 s), counted
in the chain's block time. ``block_time`` is a lower bound of the seconds between blocks (the chain's
slot or interval: 12 on Ethereum, 1 on the embedded chain); the consumer derives the time-out from it and
each provider's gateway refuses an agreement whose time-out is shorter than its own derivation.
"""

from __future__ import annotations

import math

MARGIN_FRACTION = 0.1
MARGIN_SECONDS = 60.0
DEFAULT_BLOCK_TIME = 12.0


def compute_time_out(session_timeout: float, block_time: float) -> int:
    """Blocks after which a session's payment may be refunded."""
    if not session_timeout > 0 or not block_time > 0:
        raise ValueError(f"session_timeout and block_time must be > 0, got {session_timeout}, {block_time}")
    seconds = session_timeout * (1 + MARGIN_FRACTION) + MARGIN_SECONDS
    return math.ceil(seconds / block_time)
