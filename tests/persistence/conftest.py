"""A fresh JetStream-enabled nats-server per test that asks for ``nats_server``."""

from __future__ import annotations

from meshsub_trio.testing.pytest_plugin import nats_server

__all__ = ["nats_server"]
