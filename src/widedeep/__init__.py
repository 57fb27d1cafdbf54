"""widedeep: Wide & Deep learning (Cheng et al., 2016) on PyTorch."""

__version__ = "0.1.0"
