"""When to try again, and how long to wait: capped exponential backoff with full jitter.

Full jitter (the wait is uniform in ``[0, min(cap, base * 2**n)]``) spreads
clients that lost the same server at the same moment (a deploy, a SIGTERM)
over the whole window instead of sending them back in synchronised waves.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries a lost or failed connection.

    * ``base``/``cap``: the n-th consecutive failure waits uniform
      ``[0, min(cap, base * 2**n)]`` seconds (n from 0), then tries the next URL.
    * ``max_attempts``/``max_elapsed``: give up (:class:`NetworkGone`) after
      this many consecutive failures, or this many seconds since the first of
      them; None for no limit.
    * ``stable_after``: a connection that stayed up this long counts as a
      success: the next failure starts a new streak (waits short again).
      A server that accepts and drops every connection at once therefore
      backs off like one that refuses them.
    """

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int | None = None
    max_elapsed: float | None = 300.0
    stable_after: float = 5.0

    def __post_init__(self) -> None:
        if not (self.base > 0 and math.isfinite(self.base)):
            raise ValueError("base must be a positive number of seconds")
        if not self.cap >= self.base:
            raise ValueError("cap must be at least base")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")
        if self.max_elapsed is not None and self.max_elapsed < 0:
            raise ValueError("max_elapsed must be >= 0 (or None)")
        if self.stable_after < 0:
            raise ValueError("stable_after must be >= 0")

    def ceiling(self, failures: int) -> float:
        """The longest wait after *failures* consecutive failures (1 = the first)."""
        exponent = max(0, failures - 1)
        if exponent >= 64:  # 2**64 * base is past any cap
            return self.cap
        return min(self.cap, self.base * 2.0**exponent)

    def delay(self, failures: int, rng: random.Random) -> float:
        """A full-jitter wait after *failures* consecutive failures."""
        return rng.uniform(0.0, self.ceiling(failures))

    def exhausted(self, failures: int, elapsed: float) -> bool:
        """Whether *failures* failures over *elapsed* seconds is past the policy."""
        if self.max_attempts is not None and failures >= self.max_attempts:
            return True
        return self.max_elapsed is not None and elapsed > self.max_elapsed
