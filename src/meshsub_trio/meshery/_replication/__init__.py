"""Replication: one model over a shared log (NATS), snapshots, pending local changes, resume."""
