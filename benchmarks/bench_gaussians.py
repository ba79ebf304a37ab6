"""Gaussian rasterizer throughput: 30k Gaussians on the built-in head, numba fast path vs the torch twin.

Scene: one Gaussian per triangle on 30,000 random triangles (of 45,150) of the built-in head, placed as
GaussianAvatars initialises them (at the centroid, scale k = triangle size, the triangle's rotation), SH
degree 3 (the preview colours as DC, small random higher bands). Two opacities: 0.1 is GaussianAvatars'
initial value (almost no pixel stops early: the worst case), 0.9 an opaque surface like a fitted
avatar. One camera 0.6 m in front of the face, 25 degree field of view.

Every time is a full ``render_gaussians`` call (projection, SH, sorting, binning, compositing, outputs),
median and best of ``--repeats`` calls; the machine is shared, so the load average is printed too. The
twin evaluates every pixel against every Gaussian, so it is timed on the same scene at 64 x 64 (against
the fast path at 64 x 64) and its time at 256 x 256 is extrapolated (x 16 pixels). On a shared machine
``--threads 1`` gives steadier numbers (threads that spin-wait for a busy core inflate multi-threaded
medians several times); the script also asks OpenMP to wait passively (see below).

    python benchmarks/bench_gaussians.py --repeats 10 [--threads 1]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

# OpenMP threads (torch's and numba's) spin while they wait for work by default; on a machine shared with
# other jobs a spinning thread holds a core someone else needs, and medians grow several times. Passive
# waiting must be chosen before the OpenMP runtimes start, i.e. before torch and numba are imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import torch  # noqa: E402

from morph4d.avatar.gaussians import BoundGaussians, _kernels, render_gaussians, rgb_to_sh  # noqa: E402
from morph4d.cameras import orbit_cameras  # noqa: E402
from morph4d.heads.builtin import load_builtin_head, vertex_colors  # noqa: E402

NUM_GAUSSIANS = 30_000
DISTANCE_M, FOV_DEG = 0.6, 25.0
TARGET_FPS = {256: 30.0, 512: 10.0}


def head_scene(opacity: float) -> tuple:
    """(means, quats, scales, opacities, sh) of 30k Gaussians bound to the built-in head's triangles."""
    head = load_builtin_head()
    g = torch.Generator().manual_seed(0)
    triangles = torch.randperm(len(head.faces), generator=g)[:NUM_GAUSSIANS]
    bound = BoundGaussians.one_per_triangle(triangles, sh_degree=3, opacity=opacity)
    bound.sh[:, 0] = rgb_to_sh(vertex_colors(head)[head.faces[triangles]].mean(1))
    bound.sh[:, 1:] = 0.05 * torch.randn(bound.sh[:, 1:].shape, generator=g)
    world = bound.to_world(head.template, head.faces)
    return world.means, world.quats, world.scales, world.opacities, world.sh


def cameras(size: int):
    return orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), DISTANCE_M, FOV_DEG, size, size,
                         target=(0.0, -0.01, 0.0))


def call_seconds(fn, repeats: int) -> tuple[float, float, float]:
    """(median wall, best wall, median CPU) seconds of ``repeats`` calls after one warm-up call. CPU time
    (all threads of this process) does not count time spent waiting for a core other jobs hold."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per row (the twin does 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: all cores)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    print(f"numba threads: {numba.get_num_threads()}, torch threads: {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average: {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    cache = Path(_kernels.__file__).parent / "__pycache__"
    cached = any(cache.glob("_kernels.composite_forward-*.nbi"))
    scene = head_scene(0.9)
    start = time.perf_counter()
    render_gaussians(*scene, cameras(64))
    print(f"numba first call: {time.perf_counter() - start:.2f} s "
          f"({'cache found' if cached else 'no cache: JIT compile, now cached'} in {cache})")

    rows = []  # (what, opacity, size, median s, best s, median CPU s)
    for opacity in (0.1, 0.9):
        scene = head_scene(opacity)
        for size in (256, 512):
            cams = cameras(size)
            rows.append(("forward", opacity, size,
                         *call_seconds(lambda: render_gaussians(*scene, cams, backend="numba"), args.repeats)))
        leaves = [x.clone().requires_grad_() for x in scene]
        cams = cameras(256)
        target = torch.rand(1, 256, 256, 3, generator=torch.Generator().manual_seed(1))

        def step():
            for x in leaves:
                x.grad = None
            (render_gaussians(*leaves, cams, backend="numba").image - target).abs().mean().backward()

        rows.append(("forward+backward", opacity, 256, *call_seconds(step, max(1, args.repeats // 2))))
        cams = cameras(64)
        rows.append(("forward", opacity, 64, *call_seconds(lambda: render_gaussians(*scene, cams), args.repeats)))
        with torch.no_grad():
            rows.append(("twin forward", opacity, 64,
                         *call_seconds(lambda: render_gaussians(*scene, cams, backend="torch"), 2)))

    print(f"\n{'':17} {'opacity':>7} {'size':>9} {'median ms':>10} {'best ms':>8} {'frames/s':>9} {'(best)':>7} "
          f"{'CPU ms':>8}")
    for what, opacity, size, median, best, cpu in rows:
        print(f"{what:17} {opacity:7.1f} {f'{size}x{size}':>9} {1e3 * median:10.1f} {1e3 * best:8.1f} "
              f"{1 / median:9.1f} {1 / best:7.1f} {1e3 * cpu:8.1f}")
    print()
    for opacity in (0.1, 0.9):
        found = {(what, size): (median, best) for what, o, size, median, best, _ in rows if o == opacity}
        for size, fps in TARGET_FPS.items():
            median, best = found[("forward", size)]
            print(f"opacity {opacity}: {size}x{size} forward {1 / median:.1f} frames/s median, {1 / best:.1f} best "
                  f"(target >= {fps:.0f})")
        twin, fast = found[("twin forward", 64)], found[("forward", 64)]
        print(f"opacity {opacity}: fast / twin at 64x64 (same 30k Gaussians): {twin[0] / fast[0]:.0f}x median, "
              f"{twin[1] / fast[1]:.0f}x best; twin at 256x256 extrapolated (x16 pixels): "
              f"{16 * twin[0]:.0f} s per frame, {16 * twin[0] / found[('forward', 256)][0]:.0f}x the fast path")
    print(f"load average now: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
