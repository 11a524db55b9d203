"""blocktrace: trace the tensor shapes through a transformer Block and draw its data flow.

The API (blocktrace.api) is loaded on first use, so that `import blocktrace` imports neither torch
nor rich."""

from typing import TYPE_CHECKING, Any

from blocktrace.errors import BlocktraceError

__version__ = "0.1.0"
__all__ = ["BlocktraceError", "Trace", "__version__", "diagram", "grad", "memory", "source", "table", "trace"]

if TYPE_CHECKING:
    from blocktrace.api import diagram, grad, memory, source, table, trace
    from blocktrace.tracing.trace import Trace


def __getattr__(name: str) -> Any:
    if name in ("trace", "diagram", "table", "source", "memory", "grad"):
        from blocktrace import api

        return getattr(api, name)
    if name == "Trace":
        from blocktrace.tracing.trace import Trace

        return Trace
    raise AttributeError(f"module 'blocktrace' has no attribute {name!r}")
