"""What every view says about a trace besides its drawing: the header line and the legend of the
size symbols. No torch here."""

from __future__ import annotations

import textwrap

from blocktrace.tracing.trace import Trace

SOURCES = {
    "probe": "2 tiny CPU probes, scaled exactly",
    "meta": "the meta device",
    "cpu": "a real CPU run",
    "cuda": "a real CUDA run",
}


def header(trace: Trace, width: int | None = None) -> str:
    source = SOURCES.get(trace.device, trace.device)
    said = trace.config.get("dtype_source")  # where a --hf model's dtype came from
    dtype = f" ({trace.float_dtype}{f', {said}' if said else ''})" if trace.float_dtype else ""
    adds = len(trace.residual_adds)
    text = (
        f"{trace.model}{dtype}: {len(trace.calls)} module calls, {len(trace.ops)} ops, "
        f"{adds} residual add{'' if adds == 1 else 's'} (shapes from {source})"
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
