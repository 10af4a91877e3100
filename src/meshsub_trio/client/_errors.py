"""What can go wrong for a client operation, one exception per cause.

Each carries what the server said (close code and reason, HTTP status,
``connection_error`` payload, GraphQL errors) so a caller can report it or
act on it without parsing messages.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every error :mod:`meshsub_trio.client` raises."""


class AuthRefused(ClientError):
    """The server refused the connection's credentials; retrying cannot help.

    Raised for close 4403 (and 4401), a legacy ``connection_error`` and an
    upgrade answered 401/403. The client does not retry it (no storm of
    refused attempts); a new operation makes a new attempt.
    """

    def __init__(
        self,
        url: str,
        *,
        code: int | None = None,
        reason: str = "",
        status: int | None = None,
        payload: Any = None,
    ) -> None:
        said = reason or (payload and str(payload)) or (status and f"HTTP {status}") or "refused"
        super().__init__(f"{url} refused the credentials: {said}")
        self.url = url
        #: The WebSocket close code, if the server closed the socket.
        self.code = code
        #: The close reason (or HTTP reason) as the server sent it.
        self.reason = reason
        #: The HTTP status when the upgrade itself was refused.
        self.status = status
        #: The legacy ``connection_error`` payload, if that is how it refused.
        self.payload = payload


class ServerRejected(ClientError):
    """The server ended the connection with a code that says retrying is pointless.

    For example 4400 (it found a message of ours invalid), 4406 (no common
    subprotocol), 4409, 1002, an upgrade answered 404, or a server that broke
    the protocol (4004, recorded by this client). See
    :data:`meshsub_trio.client.CLOSE_CODES`.
    """

    def __init__(
        self, url: str, *, code: int | None, reason: str, status: int | None = None
    ) -> None:
        what = f"HTTP {status}" if status is not None else f"close {code}"
        super().__init__(f"{url}: {what} {reason}".rstrip())
        self.url = url
        self.code = code
        self.reason = reason
        self.status = status


class NetworkGone(ClientError):
    """Every URL kept failing past the retry policy.

    ``last`` describes the last failure (code, reason, cause).
    """

    def __init__(self, *, attempts: int, elapsed: float, last: Any) -> None:
        super().__init__(
            f"gave up after {attempts} failed attempt(s) over {elapsed:.1f} s; last: {last}"
        )
        self.attempts = attempts
        self.elapsed = elapsed
        #: The :class:`~meshsub_trio.client.Disconnect` of the last attempt.
        self.last = last


class OutcomeUnknown(ClientError):
    """The connection was lost after a mutation was sent and before its result came.

    Mutations are never sent twice, so whether it took effect is unknown.
    """

    def __init__(self, last: Any) -> None:
        super().__init__(f"connection lost before the mutation's result arrived: {last}")
        self.last = last


class OperationError(ClientError):
    """The server ended the operation with ``error``: the document was invalid
    (syntax, validation, unknown operation name, a limit) or its source failed.

    ``errors`` is the list of GraphQL error objects as the server sent them.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        messages = "; ".join(str(error.get("message", error)) for error in errors)
        super().__init__(messages or "operation failed")
        self.errors = errors

    @property
    def code(self) -> str | None:
        """The first error's ``extensions.code``, if the server gave one."""
        for error in self.errors:
            extensions = error.get("extensions")
            if isinstance(extensions, dict) and isinstance(extensions.get("code"), str):
                return str(extensions["code"])
        return None


class CursorLost(OperationError):
    """The server cannot resume the stream after the client's cursor.

    ``CURSOR_EXPIRED``: the events after it are no longer retained;
    ``CURSOR_INVALID``: the server does not know it (a restarted process
    without a shared log). Resubscribe without a cursor and reload the
    history, or open the subscription with ``on_cursor_lost="restart"``.
    """

    def __init__(self, errors: list[dict[str, Any]], cursor: str | None) -> None:
        super().__init__(errors)
        #: The cursor the client asked to resume after.
        self.cursor = cursor


class ResultError(ClientError):
    """The GraphQL result carried errors (``execute``, or a subscription opened
    with ``raise_on_errors=True``); ``data`` may hold the partial result."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.errors: list[dict[str, Any]] = list(payload.get("errors") or [])
        self.data: Any = payload.get("data")
        self.extensions: dict[str, Any] = dict(payload.get("extensions") or {})
        messages = "; ".join(str(error.get("message", error)) for error in self.errors)
        super().__init__(messages or "the result carried errors")


class SubscriptionOverflow(ClientError):
    """The consumer fell more than ``capacity`` payloads behind a stream that has
    no cursor to resume from, under ``Overflow.CLOSE``."""

    def __init__(self, capacity: int) -> None:
        super().__init__(f"the consumer fell more than {capacity} payloads behind")
        self.capacity = capacity


class TooManySubscriptions(ClientError):
    """The client's cap on active subscriptions is reached."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} active subscriptions per client")
        self.limit = limit


class ClientClosed(ClientError):
    """The client was closed while the operation was still running."""
