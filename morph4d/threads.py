"""Thread counts of the process's compute libraries, set in one place.

torch and numba share one OpenMP runtime (libgomp) on Linux; results of torch reductions depend on the
thread count in their last bits, so code that must be reproducible runs a block with a fixed count.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads (results depend on the thread count in the last bits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["torch_threads"]
