"""Rasterizer throughput on a head-sized mesh: numba fast path vs the torch reference twin.

Camera 0.6 m from the origin, 25 degree horizontal field of view, mesh about 0.1 m in radius, so the head
fills most of the image. Frames/s come from the median and from the best call time (the machine is shared:
the best is the code's speed, the median what a caller saw); both include the Python overhead of a full
``rasterize`` call (projection, setup, kernels, outputs).

    python benchmarks/bench_raster.py --repeats 50
"""

import argparse
import math
import os
import statistics
import time
from pathlib import Path

# OpenMP threads that spin while waiting steal the cores from any other job on a 2-core machine
# (timings then jump by 10-50x); passive waiting makes the numbers repeatable. Set before torch/numba load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba
import torch

from morph4d.cameras import Cameras
from morph4d.mesh import raster

DISTANCE_M = 0.6
FOV_DEG = 25.0


def uv_sphere(rings: int = 100, segments: int = 100, radius: float = 0.1):
    """Closed UV sphere with 2 * segments * (rings - 1) triangles (19,800 by default)."""
    theta = torch.linspace(0, math.pi, rings + 1)[1:-1]  # polar angles of the interior rings
    phi = torch.arange(segments) * (2 * math.pi / segments)
    ring = torch.stack([torch.sin(theta)[:, None] * torch.cos(phi), torch.cos(theta)[:, None].expand(-1, segments),
                        torch.sin(theta)[:, None] * torch.sin(phi)], dim=-1).reshape(-1, 3)
    vertices = radius * torch.cat([torch.tensor([[0.0, 1.0, 0.0]]), ring, torch.tensor([[0.0, -1.0, 0.0]])])
    idx = 1 + torch.arange((rings - 1) * segments).reshape(rings - 1, segments)  # ring vertex ids
    nxt = idx.roll(-1, dims=1)
    quads = [torch.stack([idx[:-1], nxt[:-1], idx[1:]], -1), torch.stack([nxt[:-1], nxt[1:], idx[1:]], -1)]
    caps = [torch.stack([torch.zeros(segments, dtype=torch.long), nxt[0], idx[0]], -1),
            torch.stack([torch.full((segments,), len(vertices) - 1), idx[-1], nxt[-1]], -1)]
    faces = torch.cat([q.reshape(-1, 3) for q in quads] + caps)
    return vertices, faces


def load_mesh():
    """The built-in head if it exists yet, else a UV sphere of the same size; returns (name, V, F)."""
    try:
        from morph4d.heads.builtin import load_builtin_head
        head = load_builtin_head()
    except (ImportError, FileNotFoundError) as error:  # the head model or its asset is not there yet
        return f"uv-sphere (built-in head not available: {error})", *uv_sphere()
    vertices = head.template
    centre = (vertices.amin(0) + vertices.amax(0)) / 2
    return "built-in head", vertices - centre, head.faces


def front_cameras(batch: int, size: int):
    """``batch`` OpenCV cameras on a small arc in front of the face (world +z), looking at the origin."""
    yaw = torch.linspace(-0.3, 0.3, batch) if batch > 1 else torch.zeros(1)
    c, s, zero, one = torch.cos(yaw), torch.sin(yaw), torch.zeros(batch), torch.ones(batch)
    # Camera axes in world coordinates: x right, y down (= -world y), z from the eye towards the origin.
    R = torch.stack([torch.stack([c, zero, -s], -1), torch.stack([zero, -one, zero], -1),
                     torch.stack([-s, zero, -c], -1)], dim=1)  # (B, 3, 3)
    eye = DISTANCE_M * torch.stack([s, zero, c], -1)
    t = -torch.einsum("bij,bj->bi", R, eye)
    f = 0.5 * size / math.tan(math.radians(FOV_DEG) / 2)
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]]).expand(batch, 3, 3)
    return Cameras(R, t, K.contiguous(), size, size)


def call_seconds(fn, repeats: int) -> tuple[float, float]:
    """(median, best) wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per row (the twin does 1/10)")
    args = parser.parse_args()

    name, vertices, faces = load_mesh()
    print(f"mesh: {name}, {len(vertices)} vertices, {len(faces)} triangles, "
          f"radius {vertices.norm(dim=-1).max():.3f} m")
    print(f"camera: {DISTANCE_M} m away, {FOV_DEG} deg fov; numba threads: {numba.get_num_threads()}, "
          f"torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")

    cache = Path(raster.__file__).parent / "__pycache__"
    cached = any(cache.glob("raster._raster_kernel-*.nbi"))
    start = time.perf_counter()
    raster.rasterize(vertices, faces, front_cameras(1, 64))
    print(f"numba first call: {time.perf_counter() - start:.2f} s "
          f"({'cache found' if cached else 'no cache: JIT compile, now cached'} in {cache})")

    rows = []
    for backend, size, batch in [("numba", 64, 1), ("numba", 64, 8), ("numba", 512, 1), ("numba", 512, 8),
                                 ("torch", 64, 1)]:
        cameras = front_cameras(batch, size)
        r = raster.rasterize(vertices, faces, cameras, backend=backend)  # warm-up
        repeats = args.repeats if backend == "numba" else max(1, args.repeats // 10)
        median, best = call_seconds(lambda: raster.rasterize(vertices, faces, cameras, backend=backend), repeats)
        rows.append((backend, size, batch, median, best, r.mask.float().mean().item()))

    print(f"\n{'backend':8} {'size':>9} {'B':>3} {'median ms':>10} {'best ms':>8} {'frames/s':>9} "
          f"{'(best)':>8} {'coverage':>9}")
    for backend, size, batch, median, best, coverage in rows:
        print(f"{backend:8} {f'{size}x{size}':>9} {batch:>3} {1e3 * median:10.2f} {1e3 * best:8.2f} "
              f"{batch / median:9.1f} {batch / best:8.1f} {coverage:9.1%}")
    fast = next(row for row in rows if row[:3] == ("numba", 64, 1))
    twin = next(row for row in rows if row[0] == "torch")
    print(f"\nfast/twin at 64x64, B=1: {twin[3] / fast[3]:.0f}x (median), {twin[4] / fast[4]:.0f}x (best)")


if __name__ == "__main__":
    main()
