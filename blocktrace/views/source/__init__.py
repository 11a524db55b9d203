"""The source view: the code that ran, each line annotated with its shapes (view.py; render.py writes it)."""
