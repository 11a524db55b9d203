"""The memory view: training and inference bytes from a memory record (build.py), written as text,
markdown, JSON, CSV or a picture (render.py)."""
