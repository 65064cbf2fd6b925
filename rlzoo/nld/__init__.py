"""Learning from NetHack data (NLD): ttyrec datasets indexed by nle.dataset, streamed as unrolls."""
from rlzoo.nld.dataset import (
    LAYOUTS,
    NLDDataset,
    build_dataset,
    indexed_files,
    open_dataset,
    ttyrec_header_problem,
    ttyrec_problem,
)
from rlzoo.nld.stream import TtyrecStream, keypress_table

__all__ = [
    "LAYOUTS",
    "NLDDataset",
    "TtyrecStream",
    "build_dataset",
    "indexed_files",
    "keypress_table",
    "open_dataset",
    "ttyrec_header_problem",
    "ttyrec_problem",
]
