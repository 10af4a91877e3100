"""GraphQL execution under Trio: document cache and limits, Trio gather, the engine."""

from ._engine import Engine, Prepared, format_errors, format_result
from ._errors import public_error
from ._limits import Limits

__all__ = ["Engine", "Limits", "Prepared", "format_errors", "format_result", "public_error"]
