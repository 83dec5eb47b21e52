"""Near-duplicate detection, pure math: shingles -> MinHash signatures -> LSH -> labels.

:mod:`evals.dedup.near_dup` is the one entry point and re-exports the text and signature helpers,
so ``from evals.dedup import label_test_items`` is all a caller needs. Nothing here does I/O.
"""

from evals.dedup.near_dup import *  # noqa: F403
from evals.dedup.near_dup import __all__  # noqa: F401
