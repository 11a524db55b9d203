"""What every view says about a trace besides its drawing: the header line and the legend of the
size symbols. No torch here."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from blocktrace.tracing.trace import Trace

SOURCES = {
    "probe": "2 tiny CPU probes, scaled exactly",
    "meta": "the meta device",
    "cpu": "a real CPU run",
    "cuda": "a real CUDA run",
}


def header(trace: Trace, width: int | None = None, parts: Sequence[tuple[str, int]] = ()) -> str:
    """The trace in one line; `parts`: the residual adds of each stream, where several are drawn
    (an encoder's and a decoder's), in place of their total."""
    source = SOURCES.get(trace.device, trace.device)
    said = trace.config.get("dtype_source")  # where a --hf model's dtype came from
    attention = trace.config.get("attention")  # the attention a --hf model was built with, if not its default
    said = f"{said}; {attention} attention" if said and attention else said
    dtype = f" ({trace.float_dtype}{f', {said}' if said else ''})" if trace.float_dtype else ""
    first, n = parts[0] if parts else ("", len(trace.residual_adds))
    adds = f"{f'{first}: ' if first else ''}{n} residual add{'' if n == 1 else 's'}"
    adds += "".join(f", {name}: {n}" for name, n in parts[1:])
    text = (
        f"{trace.model}{dtype}: {len(trace.calls)} module calls, {len(trace.ops)} ops, "
        f"{adds} (shapes from {source})"
    )
    lines = [text] if trace.stopped is None else [text, f"stopped: {trace.stopped}"]
    return "\n".join(cut for line in lines for cut in (textwrap.wrap(line, width) if width else [line]))


def legend(trace: Trace) -> list[str]:
    """One line per symbol on the page: its value and what it stands for."""
    if not trace.symbols:
        return []
    name_w = max(len(n) for n in trace.symbols)
    value_w = max(len(str(v)) for v in trace.symbols.values())
    return [
        f"{n:<{name_w}} = {v:<{value_w}}  {trace.meanings.get(n, '')}".rstrip()
        for n, v in trace.symbols.items()
    ]
