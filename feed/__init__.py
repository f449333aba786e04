"""Core library of the self-retail feed: schema, data I/O, datasets, models, indexes, bundles, the feed service.

Importing `feed` is cheap: it loads no torch, no FAISS and touches no files; submodules are imported on use.
"""

__version__ = "0.1.0"
