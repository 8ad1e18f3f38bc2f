"""Model backends behind one streaming interface (see :mod:`engine.backends.base`)."""
