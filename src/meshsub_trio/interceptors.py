"""Subscription interceptors: the protocol, and two an operator can use as they are.

``App(interceptors=[AuditLog(log), PerUserLimit(max_active=20)])`` runs each
``enter`` in order before an operation executes (WebSocket, both protocols,
and HTTP streams) and each ``leave`` in reverse after it ends, exactly once
for every interceptor whose ``enter`` completed:

- :class:`Interceptor`: the protocol (``async enter(op)``, ``leave(op, outcome)``);
- :class:`OperationInfo`: the operation (context, document, variables,
  operation name, kind, protocol, transport); ``enter`` may change its
  ``context`` and ``variables``;
- :class:`OperationOutcome` and ``Reason``: how it ended;
- :class:`Refused`: raise it in ``enter`` to refuse (the client gets the
  ``error`` a validation error gets);
- :class:`PerUserLimit`: one user's concurrent subscriptions across all of
  their connections, and their subscribe rate;
- :class:`AuditLog`: one INFO line when an operation starts, one when it ends
  (put it first in the chain to log refusals too);
- :class:`ValueInterceptor`, ``Gate`` and :data:`SKIP`: an interceptor that
  also sees a subscription's values returns a gate per subscription from
  ``gate(op)``; it passes, replaces or skips each value before execution;
- :class:`Throttle`: at most N values per second per subscription (the rest
  dropped); :class:`Filter`: only the values a predicate accepts.

A re-export only: the implementations live in private modules.
"""

from __future__ import annotations

from ._intercept import (
    SKIP,
    AuditLog,
    Filter,
    Gate,
    Interceptor,
    OperationInfo,
    OperationOutcome,
    PerUserLimit,
    Reason,
    Refused,
    Throttle,
    ValueInterceptor,
)

__all__ = [
    "SKIP",
    "AuditLog",
    "Filter",
    "Gate",
    "Interceptor",
    "OperationInfo",
    "OperationOutcome",
    "PerUserLimit",
    "Reason",
    "Refused",
    "Throttle",
    "ValueInterceptor",
]
