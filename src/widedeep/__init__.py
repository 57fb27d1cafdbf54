"""widedeep: Wide & Deep learning (Cheng et al., 2016) on PyTorch."""

__version__ = "0.1.0"

__all__ = ["load", "Predictor", "__version__"]


def __getattr__(name: str):
    # lazy: `import widedeep` (and the CLI's --help) stays fast, torch loads on first use
    if name in ("load", "Predictor"):
        from . import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'widedeep' has no attribute {name!r}")
