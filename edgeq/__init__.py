"""edgeq: take a trained PyTorch model to a phone or an edge board, and prove on the way
that it still works. The CLI (``edgeq``) is a thin layer over this library."""

__version__ = "0.1.0"
