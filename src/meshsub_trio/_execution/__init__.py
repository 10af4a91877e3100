"""GraphQL execution under Trio: document cache, Trio gather, the engine."""

from ._engine import Engine, Prepared, format_errors, format_result

__all__ = ["Engine", "Prepared", "format_errors", "format_result"]
