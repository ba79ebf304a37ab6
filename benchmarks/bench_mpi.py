"""IM-Portrait's MPI renderer (issue 18, "Speed"): frames per second of one 32-plane MPI rendered into a +5 degree
side camera at 256 and 512 px, the numba fast path against the torch reference (and the torch reference with a
backward pass, as training runs it). ``python benchmarks/bench_mpi.py [--planes 32] [--threads N]``.

Two MPIs (``setup``): random translucent planes (the fast path's early stop rarely triggers: its worst case)
and an opaque head-sized surface (the common case); timings are medians of several calls after a warm-up (the first call
compiles the kernel). Ratios in one run, this machine; target: >= 30 frames/s at 256 px.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import median_seconds  # noqa: E402  (benchmarks/timing.py)

from morph4d.cameras import Cameras, look_at  # noqa: E402
from morph4d.portrait.mpi import MPI, head_distance, orbit_about, plane_depths, render_mpi  # noqa: E402
from morph4d.threads import DEFAULT_THREADS, configure_threads  # noqa: E402

HEAD = torch.tensor([0.0, 0.02, 0.0], dtype=torch.float64)


def setup(size: int, planes: int, kind: str = "dense"):
    """``dense``: random translucent planes (the worst case); ``surface``: an opaque head-sized sphere (radius
    0.1 m at the head joint) on the plane nearest its depth at each pixel, nothing elsewhere (what a head MPI
    looks like: a pixel crosses one surface)."""
    R, t = look_at(torch.tensor([[0.0, 0.02, 0.75]], dtype=torch.float64), HEAD[None])
    f = size / (2 * math.tan(math.radians(13)))
    K = torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]], dtype=torch.float64)
    cam = Cameras(R.float(), t.float(), K.float(), size, size)
    g = torch.Generator().manual_seed(0)
    depths = plane_depths(head_distance(cam, HEAD), planes)
    color = torch.rand(planes, 3, size, size, generator=g)
    if kind == "dense":
        alpha = torch.rand(planes, 1, size, size, generator=g) ** 3
    else:
        c = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) / f           # normalised image coords
        rr = c[None, :] ** 2 + c[:, None] ** 2
        r_head, dist = 0.1, 0.75
        # ray (x, y, 1) s hits the sphere |X - (0, 0, dist)| = r_head at the nearest s
        disc = dist ** 2 - (1 + rr) * (dist ** 2 - r_head ** 2)
        z = (dist - disc.clamp(min=0).sqrt()) / (1 + rr)                              # depth of the hit
        nearest = (1 / z[None] - 1 / depths[:, None, None]).abs().argmin(0)           # the plane at the surface
        alpha = ((torch.arange(planes)[:, None, None] == nearest) & (disc > 0))[:, None].float()
    mpi = MPI(color, alpha, depths.float(), cam)
    return mpi, orbit_about(cam, HEAD, 5.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--planes", type=int, default=32)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = ap.parse_args()
    configure_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, {args.planes} planes")
    print("| size | MPI | fast path (frames/s) | torch reference (frames/s) | fast / torch | torch forward + "
          "backward (frames/s) |")
    print("|---|---|---|---|---|---|")
    for size, kind in ((256, "surface"), (256, "dense"), (512, "surface"), (512, "dense")):
        mpi, side = setup(size, args.planes, kind)
        fast = median_seconds(lambda: render_mpi(mpi, side, fast=True), 9)
        ref = median_seconds(lambda: render_mpi(mpi, side, fast=False), 3)
        color, alpha = mpi.color.clone().requires_grad_(), mpi.alpha.clone().requires_grad_()

        def train_step():
            out = render_mpi(MPI(color, alpha, mpi.depths, mpi.camera), side)
            out.rgb.mean().backward()
        train = median_seconds(train_step, 3)
        print(f"| {size} | {kind} | {1 / fast:.1f} | {1 / ref:.1f} | {ref / fast:.1f}x | {1 / train:.2f} |")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
