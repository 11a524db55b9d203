"""The data-flow graph of a trace, built once and read by every view: each opened level's stream,
its residuals, its side inputs and side outputs (model.py), worked out by build.py."""
