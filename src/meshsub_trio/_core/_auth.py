"""The connection-init verdict: the app's hooks asked, their answer made plain.

Kept apart from the connection so the driver only maps a verdict to its
protocol machine (``accept``, ``reject`` or a 4500 close) and the hooks'
rules (``False`` refuses, a dict becomes the ack payload, ``AuthError``
refuses with its reason, anything else is the server's fault) read in one
place. The reason is logged, never the credentials.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .._app import App, AuthError, Context
from .._metrics import Metrics

log = logging.getLogger("meshsub_trio.connection")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Accepted (with an optional ack payload), refused (with the app's reason), or failed."""

    ack_payload: dict[str, Any] | None = None
    refused: str | None = None
    failed: bool = False


async def authorise(
    app: App, context: Context, metrics: Metrics, log_fields: dict[str, Any]
) -> Verdict:
    """Run ``authenticate`` then ``on_connect``; *context* gets ``auth`` set."""
    try:
        if app.authenticate is not None:
            context.auth = await app.authenticate(context)
        ack_payload: dict[str, Any] | None = None
        if app.on_connect is not None:
            verdict = await app.on_connect(context)
            if verdict is False:
                raise AuthError("Forbidden")
            if isinstance(verdict, dict):
                ack_payload = verdict
    except AuthError as refusal:
        reason = str(refusal) or "Forbidden"
        metrics.auth_failures("ws").inc()
        if log.isEnabledFor(logging.INFO):
            fields = dict(log_fields)
            fields.update(where="ws", reason=reason[:200])
            log.info("authentication refused", extra=fields)
        return Verdict(refused=reason)
    except Exception:
        log.exception("connection init hook failed")
        return Verdict(failed=True)
    return Verdict(ack_payload=ack_payload)
