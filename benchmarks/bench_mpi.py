"""IM-Portrait's MPI renderer (issue 18, "Speed"): frames per second of one 32-plane MPI rendered into a +5 degree
side camera at 256 and 512 px, the numba fast path against the torch reference (and the torch reference with a
backward pass, as training runs it). ``python benchmarks/bench_mpi.py [--planes 32] [--threads N]``.

The MPI is random (colours uniform, alphas cubed uniform: translucent layers, so the fast path's early stop
rarely triggers, its worst case); timings are medians of several calls after a warm-up (the first call
compiles the kernel). Ratios in one run, this machine; target: >= 30 frames/s at 256 px.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from morph4d.cameras import Cameras, look_at  # noqa: E402
from morph4d.portrait.mpi import MPI, head_distance, orbit_about, plane_depths, render_mpi  # noqa: E402
from morph4d.threads import DEFAULT_THREADS, configure_threads  # noqa: E402

HEAD = torch.tensor([0.0, 0.02, 0.0], dtype=torch.float64)


def setup(size: int, planes: int):
    R, t = look_at(torch.tensor([[0.0, 0.02, 0.75]], dtype=torch.float64), HEAD[None])
    f = size / (2 * math.tan(math.radians(13)))
    K = torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]], dtype=torch.float64)
    cam = Cameras(R.float(), t.float(), K.float(), size, size)
    g = torch.Generator().manual_seed(0)
    mpi = MPI(torch.rand(planes, 3, size, size, generator=g), torch.rand(planes, 1, size, size, generator=g) ** 3,
              plane_depths(head_distance(cam, HEAD), planes).float(), cam)
    return mpi, orbit_about(cam, HEAD, 5.0)


def seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--planes", type=int, default=32)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = ap.parse_args()
    configure_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, {args.planes} planes")
    print("| size | fast path (frames/s) | torch reference (frames/s) | fast / torch | torch forward + backward "
          "(frames/s) |")
    print("|---|---|---|---|---|")
    for size in (256, 512):
        mpi, side = setup(size, args.planes)
        fast = seconds(lambda: render_mpi(mpi, side, fast=True), 9)
        ref = seconds(lambda: render_mpi(mpi, side, fast=False), 3)
        color, alpha = mpi.color.clone().requires_grad_(), mpi.alpha.clone().requires_grad_()

        def train_step():
            out = render_mpi(MPI(color, alpha, mpi.depths, mpi.camera), side)
            out.rgb.mean().backward()
        train = seconds(train_step, 3)
        print(f"| {size} | {1 / fast:.1f} | {1 / ref:.1f} | {ref / fast:.1f}x | {1 / train:.2f} |")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
