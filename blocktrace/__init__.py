"""blocktrace: trace the tensor shapes through a transformer Block and draw its data flow."""

__version__ = "0.1.0"
