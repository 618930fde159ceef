"""harness: a PyTorch training and benchmarking harness."""

__version__ = "0.1.0"
