"""Data sets bundled with or downloadable by widedeep (census, ...)."""
