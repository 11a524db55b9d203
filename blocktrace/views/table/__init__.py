"""The table view: rows built from a trace (build.py), written as text, markdown, JSON or CSV (render.py)."""
