"""Which endings of a connection the client retries, and which are final.

The rule: retry when the server or the network was at fault, since another
attempt (maybe at another URL) can succeed; stop when the same attempt would
fail the same way again: our credentials or our messages are refused.

=====  ==================================  ======================================
code   meaning                             the client
=====  ==================================  ======================================
1000   normal closure (by the server)      retries: its operations are still wanted
1001   going away (shutdown, deploy)       retries, on the next URL
1005   closed without a status             retries
1006   no close frame (RST, kill, timeout) retries
1008   policy violation (meshsub: stalled  retries
       writes, i.e. this client was slow)
1011   internal server error               retries
1012   service restart                     retries
1013   try again later                     retries
1014   bad gateway                         retries
4408   init timeout (a slow network)       retries
4500   internal server error (graphql-ws)  retries
4504   no ack in time (recorded here)      retries
4403   forbidden: auth refused             :class:`AuthRefused`, not retried
4401   unauthorized                        :class:`AuthRefused`, not retried
4400   our message was invalid             :class:`ServerRejected`, not retried
4406   no common subprotocol               :class:`ServerRejected`, not retried
4409   duplicate operation id              :class:`ServerRejected`, not retried
4429   too many init requests              :class:`ServerRejected`, not retried
4004   the server broke the protocol       :class:`ServerRejected`, not retried
       (recorded here, as graphql-ws does)
other  1002, 1003, 1007, 1009, 1010,       :class:`ServerRejected`, not retried
       any other 3xxx/4xxx
=====  ==================================  ======================================

Failures before a WebSocket exists: a refused or unreachable TCP connect, a
handshake timeout and an upgrade answered 429 or 5xx are retried; 401/403
are :class:`AuthRefused`; any other status is :class:`ServerRejected`. A
legacy ``connection_error`` (the server refused ``connection_init``) is
:class:`AuthRefused`. graphql-ws's own client retries 4403 (to pick up a new
token); this client does not, because its ``connection_params``/``token``
callbacks already run before every attempt: a refusal of fresh credentials
is final, and retrying it would be a storm.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    """What one ended connection means for the client."""

    RETRY = "retry"
    AUTH = "auth"
    FATAL = "fatal"


#: The close code the client records when the server broke the protocol.
BAD_RESPONSE = 4004
#: The close code the client records when no ``connection_ack`` came in time.
ACK_TIMEOUT = 4504
#: Recorded when the socket ended without a close frame (or a pong never came).
ABNORMAL = 1006

RETRIED_CODES: frozenset[int] = frozenset(
    {1000, 1001, 1005, ABNORMAL, 1008, 1011, 1012, 1013, 1014, 4408, 4500, ACK_TIMEOUT}
)
AUTH_CODES: frozenset[int] = frozenset({4401, 4403})

#: The table above, as data: close code -> verdict (anything else is FATAL).
CLOSE_CODES: dict[int, Verdict] = {
    **dict.fromkeys(sorted(RETRIED_CODES), Verdict.RETRY),
    **dict.fromkeys(sorted(AUTH_CODES), Verdict.AUTH),
    **dict.fromkeys((1002, 1003, 1007, 1009, 1010, 4400, 4406, 4409, 4429, BAD_RESPONSE),
                    Verdict.FATAL),
}  # fmt: skip


def close_verdict(code: int) -> Verdict:
    """The verdict for a WebSocket close code."""
    return CLOSE_CODES.get(code, Verdict.FATAL)


def status_verdict(status: int) -> Verdict:
    """The verdict for an HTTP status that refused the upgrade."""
    if status in (401, 403):
        return Verdict.AUTH
    if status == 429 or status >= 500:
        return Verdict.RETRY
    return Verdict.FATAL
