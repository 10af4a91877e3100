"""The embedded nats-server's watchdog: a server that hangs is killed, so that it restarts.

A nats-server that exits is started again by :meth:`EmbeddedNats.run`; one
that hangs (SIGSTOPped, deadlocked) keeps its process and its port, so
nothing would ever restart it: the workers notice within
``NatsOptions.stale_timeout`` and refuse changes until it answers, which it
never does. So the supervisor probes it the cheapest way that needs the
server itself: a TCP connection to its client port, which a live nats-server
greets at once with its ``INFO {...}`` line (before any authentication, so
the probe needs no token and leaves nothing in its log). The kernel of a
stopped process still accepts the connection; nobody sends the greeting.
After :data:`PROBE_FAILURES` probes in a row without it the server is
SIGKILLed (which ends a stopped process too; SIGTERM would wait for it to
run again) and the restart loop starts it on the same port and store.

Only a server that said it is ready is probed (a start may replay a large
JetStream store first), and the probing stops before a stop begins.
``MESHSUB_NATS_WATCHDOG=INTERVAL,TIMEOUT,FAILURES`` replaces the bounds (the
tests use short ones) and ``MESHSUB_NATS_WATCHDOG=off`` turns the watchdog
off, e.g. to attach a debugger to nats-server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

log = logging.getLogger("meshsub_trio.workers")

#: Seconds from the start of one probe to the next: one loopback connection
#: a second costs nothing measurable and keeps the detection bound short.
PROBE_INTERVAL = 1.0
#: Seconds a probe waits for the greeting: a live server sends it within a
#: millisecond on loopback, so 2 s is a thousandfold margin for a loaded machine.
PROBE_TIMEOUT = 2.0
#: Failed probes in a row before the kill: one slow answer (swapping, a long
#: pause) must not cost every worker a reconnect and JetStream a recovery;
#: three (6 s without a greeting at the least) is a hang. With the two above a
#: hang is killed after 6 to 7 s, before the workers' own 10 s ``stale_timeout``
#: runs out: they see a closed connection and reconnect to the new server.
PROBE_FAILURES = 3
WATCHDOG_ENV = "MESHSUB_NATS_WATCHDOG"
_GREETING = b"INFO "


@dataclass(frozen=True)
class Watchdog:
    """How often and how patiently the embedded nats-server is probed."""

    interval: float = PROBE_INTERVAL
    timeout: float = PROBE_TIMEOUT
    failures: int = PROBE_FAILURES

    def __post_init__(self) -> None:
        for value in (self.interval, self.timeout):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{value!r} is not a number of seconds above 0")
        if self.failures < 1:
            raise ValueError(f"{self.failures!r} failures is fewer than 1")

    @property
    def bound(self) -> float:
        """Seconds from a hang to the kill, at most: the probe before it may just
        have passed, then each failing one takes its timeout or the interval."""
        return self.interval + self.failures * max(self.interval, self.timeout)


#: The bounds above, for whoever does not choose their own.
DEFAULT_WATCHDOG = Watchdog()


def watchdog_from(environ: Mapping[str, str]) -> Watchdog | None:
    """The watchdog :data:`WATCHDOG_ENV` asks for (None: off), else the default one."""
    text = environ.get(WATCHDOG_ENV, "").strip()
    if not text:
        return DEFAULT_WATCHDOG
    if text.lower() == "off":
        return None
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) != 3:
            raise ValueError(f"{len(parts)} values")
        return Watchdog(float(parts[0]), float(parts[1]), int(parts[2]))
    except ValueError as error:
        raise ValueError(
            f"{WATCHDOG_ENV} must be INTERVAL,TIMEOUT,FAILURES (seconds, seconds, a whole "
            f"number from 1) or off, not {text!r} ({error})"
        ) from None


async def greets(port: int, timeout: float) -> bool:
    """Whether the nats-server on 127.0.0.1:*port* sends its INFO line within *timeout*."""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return False
        async with stream:
            received = b""
            try:
                while len(received) < len(_GREETING):
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return False
                    received += chunk
            except trio.BrokenResourceError:
                return False
            return received.startswith(_GREETING)
    return False


async def watch(port: int, watchdog: Watchdog, hung: Callable[[], None]) -> None:
    """Probe until cancelled; call *hung* (once, then return) after too many failures."""
    failed = 0
    while True:
        started = trio.current_time()
        if await greets(port, watchdog.timeout):
            failed = 0
        else:
            failed += 1
            if failed >= watchdog.failures:
                hung()
                return
            log.warning(
                "embedded nats-server did not greet a probe within %.1f s (%d of %d)",
                watchdog.timeout,
                failed,
                watchdog.failures,
            )
        await trio.sleep_until(started + watchdog.interval)
