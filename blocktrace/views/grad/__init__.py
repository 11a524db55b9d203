"""The grad view: the gradient along the residual stream, layer by layer, from a grad record, written
as bars and numbers in text, a markdown table, JSON, CSV or a picture (render.py)."""
