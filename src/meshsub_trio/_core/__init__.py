"""The core: one connection, its operations, their delivery to a sink, cohorts, server state."""
