"""Thread counts of the process's compute libraries, decided in one place.

torch and numba share one OpenMP runtime (libgomp) on Linux, and three things went wrong before this module
decided for both (issue 20):

* numba's OpenMP layer starts its pool lazily, at the first parallel kernel, and sets the runtime's global
  thread count to its own (by default the core count) as it does: a process that asked torch for 1 thread
  ran with 2 after the first rasterization. ``configure_threads`` starts numba's pool itself with the
  wanted count, then sets torch's, so the count holds whatever library runs first.
* ``torch.set_num_threads`` turns MKL's dynamic adjustment off, and libgomp allows unlimited nested levels:
  every MKL call inside one of torch's parallel loops (the CPU flash-attention kernel's GEMMs) then started a
  nested team, 4 threads on 2 cores spinning at each other's barriers. An MMVDM forward took 6x longer, its
  attention 15-20x; this was the "sampling 3.7x slower with 2 configured threads" of issue 20 and, likely,
  the "flash attention ~5x slower in bf16 training" of session 5. Nothing of ours nests on purpose, so the
  runtime gets one active level (``_openmp_one_level``) wherever we set a count.
* The wait policy stays libgomp's default (threads spin briefly before sleeping): ``OMP_WAIT_POLICY=PASSIVE``
  measured 2x slower fit iterations and equal sampling, and the policy can only be chosen before the
  runtime loads, i.e. by the user's environment.

``benchmarks/bench_threads.py`` measures each set-up (demo-fit iterations and the default's sampling, each in
a fresh process; its table with the load average is in README "Speed: threads and the fit"): 2 threads were
fastest for both, about 1.45x ahead of 1 thread. Every command therefore defaults to the machine's core count
(``DEFAULT_THREADS``) and takes ``--threads N``. Results of torch reductions depend on the thread count in
their last bits; code that must be reproducible runs a block under ``torch_threads``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

import numba
import torch
from numba.np.ufunc import parallel as numba_parallel

from morph4d.errors import Morph4DError

# what measured fastest here for fitting, sampling and training (module docstring); capped where nothing of
# ours was measured
DEFAULT_THREADS = max(1, min(os.cpu_count() or 1, 8))


def configure_threads(n: int) -> None:
    """Run torch, numba and OpenMP on ``n`` threads for the rest of the process (child processes inherit it
    through ``OMP_NUM_THREADS`` / ``NUMBA_NUM_THREADS``)."""
    if not isinstance(n, int) or not 1 <= n <= (os.cpu_count() or 1) * 4:
        raise Morph4DError(f"--threads must be a whole number from 1 to {(os.cpu_count() or 1) * 4}, got {n}")
    os.environ["OMP_NUM_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = str(n)
    if not numba_parallel._is_initialized:   # numba 0.61: the pool starts once, with NUMBA_NUM_THREADS threads
        numba.config.NUMBA_NUM_THREADS = n
        numba_parallel._launch_threads()     # ... and sets OpenMP's global count as it starts: before torch's
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)
    _openmp_one_level()


def _openmp_one_level() -> None:
    """No nested OpenMP teams. ``torch.set_num_threads`` turns MKL's dynamic adjustment off; with libgomp's
    default of unlimited active levels, every MKL call made inside one of torch's parallel loops (the CPU
    flash-attention kernel's GEMMs) then starts a team of its own: 4 threads on 2 cores, spinning at each
    other's barriers (an MMVDM forward measured 6x slower, its attention 15-20x; benchmarks/bench_threads.py).
    Nothing here nests on purpose, so one level loses nothing."""
    for path in _loaded_openmp_runtimes():
        try:
            ctypes.CDLL(path).omp_set_max_active_levels(1)   # already loaded: dlopen returns that copy
        except (OSError, AttributeError):
            continue


def _loaded_openmp_runtimes() -> list[str]:
    """Paths of the GNU OpenMP runtimes this process has loaded (torch's own copy, which some wheels name
    ``libgomp-<hash>.so.1``, and the one numba links, when they differ); none on other runtimes (macOS: libomp)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libgomp" in line and line.rstrip().endswith((".so", ".so.1"))}
    except OSError:   # not Linux
        return []
    return sorted(paths)


def thread_counts() -> dict:
    """What each library will use now (for run configs and benchmarks)."""
    return {"torch": torch.get_num_threads(), "numba": numba.get_num_threads()}


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads (results depend on the thread count in the last bits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    _openmp_one_level()
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["configure_threads", "thread_counts", "torch_threads"]
