"""Deterministic small products: run a block of torch work on one thread.

BLAS splits a product's sums differently for each thread count, so the same product at 1 and
at 2 threads can differ in the last bits. The subspace measures (φ's and the principal
angles' k × k cross products of thin bases, d·k² flops) run on one thread, so given the same
bases a serial run and a ``--workers`` run (whose processes get fewer threads each) give the
same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, then restore the setting."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
