"""A fresh JetStream-enabled nats-server per test that asks for ``nats_server``."""

from __future__ import annotations

from meshsub_trio.testing._nats_server import nats_server

__all__ = ["nats_server"]
