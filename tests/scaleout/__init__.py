"""Scale-out: many server processes on one NATS behave as one server."""
