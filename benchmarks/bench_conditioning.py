"""Benchmark: MVP4D conditioning for 8 views x 49 frames at 512 px (latents 64x64), built-in head.

Target on the 2-core CPU: <= 10 s for the whole (8, 13, C, 64, 64) tensor (MVP4D's per-pass size).
Usage: python benchmarks/bench_conditioning.py [--repeats 3] [--views 8] [--frames 49] [--res 512]
"""

import argparse
import os
import statistics
import time

# OpenMP threads that spin while waiting steal the cores from any other job on a 2-core machine
# (timings then jump by 10-50x); passive waiting makes the numbers repeatable. Set before torch/numba load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from morph4d.cameras import orbit_cameras, view_set
from morph4d.conditioning.maps import HeadConditioner
from morph4d.heads.animation import builtin_animation
from morph4d.heads.builtin import load_builtin_head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--res", type=int, default=512)
    args = ap.parse_args()
    head = load_builtin_head()
    cond = HeadConditioner(head)
    anim = builtin_animation("talk", head, args.frames)
    vs = view_set("120")
    keys = torch.nonzero(vs.key)[:, 0]
    cams = vs.cameras(0.75, 26.0, args.res, args.res)[keys[: args.views]]
    ref = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 0.75, 26.0, args.res, args.res)
    cond.video(anim.params, cams[:1], ref)  # warm-up (numba JIT / cache)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = cond.video(anim.params, cams, ref)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    cond.reference(head.zero_params(), ref)
    t_ref = time.perf_counter() - t
    print(f"mesh: built-in head, {head.num_vertices} vertices, {head.faces.shape[0]} triangles; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"conditioning {args.views} views x {args.frames} frames at {args.res} px -> {tuple(out.shape)}")
    print(f"  median {statistics.median(times):.2f} s, best {min(times):.2f} s over {args.repeats} runs "
          f"(target <= 10 s); reference image {1000 * t_ref:.0f} ms")


if __name__ == "__main__":
    main()
