"""traitpipe: trait mining from museum specimen collections at collection scale.

Stages: SST segmentation on SAM 2, explanation maps (Grad-CAM family, Finer-CAM,
Prompt-CAM, INTR) and Phylo-NN codes, written to Zarr and Parquet by a Snakemake
workflow. Compute lives in the stage packages; file I/O in ``traitpipe.store``
and ``traitpipe.jobs``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("traitpipe")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
