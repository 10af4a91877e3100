"""A Trio GraphQL subscription client: subscriptions that survive the network.

::

    async with open_client("ws://127.0.0.1:9081/api/system/graphql/query") as client:
        async with client.subscribe("subscription { subscribeEvents { id } }") as stream:
            async for payload in stream:
                print(payload["data"])
        print(await client.execute("query { getAvailableNamespaces { namespace } }"))

- One WebSocket carries every operation (``graphql-transport-ws`` or legacy
  ``graphql-ws``), opened on the first one and closed with 1000 after an
  idle grace; leaving ``subscribe``'s block sends ``complete``/``stop``.
- ``transport="sse"``: one HTTP stream per operation (graphql-sse's distinct
  connections mode, over httpx), with the same resumption and heartbeat;
  ``"auto"`` falls back to it for a URL whose WebSocket upgrade is refused
  or stripped (a :class:`TransportChanged` notice), and tries WebSocket
  again on a reconnect after ``websocket_retry_after`` seconds.
- ``transport="poll"``: long-poll, a loop of requests per operation that
  resumes by cursor between polls; ``"auto"`` climbs down to it where a
  buffering proxy holds the SSE stream, and back up later.
- A lost connection is retried with capped exponential backoff and full
  jitter (:class:`RetryPolicy`), on the next of several URLs; which close
  codes are final is :data:`CLOSE_CODES`. Credentials callbacks run before
  every attempt.
- Streams whose payloads carry ``extensions.cursor`` resume after the last
  cursor received, on whichever URL answers: nothing lost, nothing repeated,
  in order. Other streams are resubscribed (state-shaped ones resend state).
- A ping every ``ping_interval`` with a ``pong_timeout`` deadline finds a dead
  server or a partition within their sum, even when nothing flows.
- Each subscription has a bounded buffer with an :class:`Overflow` policy;
  the number of subscriptions is capped.
- Failures are typed: :class:`AuthRefused`, :class:`OperationError` (and
  :class:`CursorLost`), :class:`ResultError`, :class:`NetworkGone`,
  :class:`ServerRejected`, :class:`OutcomeUnknown`, :class:`SubscriptionOverflow`,
  :class:`TooManySubscriptions`, :class:`ClientClosed`; all are
  :class:`ClientError`.

Needs the ``client`` extra (trio-websocket, httpx): ``pip install 'meshsub-trio[client]'``.
"""

from .. import Overflow
from ._client import Client, Subscription, open_client
from ._closecodes import CLOSE_CODES, Verdict, close_verdict, status_verdict
from ._errors import (
    AuthRefused,
    ClientClosed,
    ClientError,
    CursorLost,
    NetworkGone,
    OperationError,
    OutcomeUnknown,
    ResultError,
    ServerRejected,
    SubscriptionOverflow,
    TooManySubscriptions,
)
from ._notices import (
    Connected,
    Connecting,
    Disconnected,
    GaveUp,
    Notice,
    Restarted,
    TransportChanged,
    describe,
)
from ._retry import RetryPolicy
from ._transport import AVAILABLE as TRANSPORTS
from ._transport import Disconnect

__all__ = [
    "CLOSE_CODES",
    "TRANSPORTS",
    "AuthRefused",
    "Client",
    "ClientClosed",
    "ClientError",
    "Connected",
    "Connecting",
    "CursorLost",
    "Disconnect",
    "Disconnected",
    "GaveUp",
    "NetworkGone",
    "Notice",
    "OperationError",
    "OutcomeUnknown",
    "Overflow",
    "Restarted",
    "ResultError",
    "RetryPolicy",
    "ServerRejected",
    "Subscription",
    "SubscriptionOverflow",
    "TooManySubscriptions",
    "TransportChanged",
    "Verdict",
    "close_verdict",
    "describe",
    "open_client",
    "status_verdict",
]
