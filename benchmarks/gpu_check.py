"""First look at a GPU machine, in one command (``benchmarks/gpu_check.sh`` runs it after the GPU tests).

For the ``paper`` MMVDM preset (CogVideoX-2B's transformer sizes; random weights, since no weights are
downloaded) it times one no-grad forward on CUDA -- bf16 autocast and PyTorch's fused SDPA kernels, the path
``MMVDM.forward`` selects on CUDA -- and prints the forward's seconds, its FLOP rate and the peak GPU memory,
at 8 views x 49 frames x 512 px (MVP4D's generation size) first, then at smaller sizes when a size does not
fit. It also times the Gaussian renderer's ``auto`` backend (gsplat on CUDA when installed, else ours). Prints
one JSON line per measurement. Without CUDA it says so and exits 0.

    python -m benchmarks.gpu_check [--preset paper] [--repeats 3]   # from the repository root
"""

import argparse
import json
import sys
import time

import torch

from benchmarks.bench_mmvdm import count_flops, inputs
from morph4d.models.latent import latent_frames
from morph4d.models.mmvdm import MMVDM, MMVDMConfig

# (views, frames, pixels), largest first: MVP4D's generation size, then what may fit a smaller card
SIZES = ((8, 49, 512), (4, 49, 512), (8, 13, 512), (4, 13, 256), (1, 13, 256))
LATENT_DOWNSAMPLE = 8   # CogVideoX's VAE: 8x in space


def time_forward(model: MMVDM, x: dict, repeats: int) -> tuple[float, int]:
    """Median seconds of one forward and the peak GPU bytes allocated during it."""
    with torch.no_grad():
        model(**x)   # warm-up: kernel selection, allocator
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(**x)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], torch.cuda.max_memory_allocated()


def check_mmvdm(preset: str, repeats: int) -> None:
    config = MMVDMConfig.preset(preset)
    with torch.device("meta"):   # FLOPs counted on the meta device, as bench_mmvdm.py's paper row
        n_params = sum(p.numel() for p in MMVDM(config).parameters())
    model = MMVDM(config, generator=torch.Generator().manual_seed(0)).to("cuda").eval()  # fp32 weights, bf16 compute

    weights = torch.cuda.memory_allocated()
    for views, frames, px in SIZES:
        h = px // LATENT_DOWNSAMPLE
        x = inputs(views, latent_frames(frames), h, h, device="cuda")
        try:
            seconds, peak = time_forward(model, x, repeats)
        except torch.cuda.OutOfMemoryError:
            print(json.dumps({"preset": preset, "views": views, "frames": frames, "resolution": px,
                              "result": "out of memory"}), flush=True)
            torch.cuda.empty_cache()
            continue
        with torch.device("meta"):
            flops, _ = count_flops(MMVDM(config), inputs(views, latent_frames(frames), h, h, device="meta"))
        print(json.dumps({"preset": preset, "parameters": n_params, "views": views, "frames": frames,
                          "resolution": px, "forward_seconds": round(seconds, 4),
                          "tflop_per_s": round(flops / seconds / 1e12, 1),
                          "peak_gib": round(peak / 2 ** 30, 2), "weights_gib": round(weights / 2 ** 30, 2),
                          "device": torch.cuda.get_device_name()}), flush=True)
        break   # the largest size that fits is the one to report


def check_gaussians(repeats: int) -> None:
    from morph4d.avatar.gaussians import BoundGaussians, render_gaussians
    from morph4d.cameras import orbit_cameras
    from morph4d.heads import load_head_model
    head = load_head_model()
    world = BoundGaussians.one_per_triangle(head.faces.shape[0], sh_degree=3).to_world(
        head(head.zero_params()), head.faces)
    args = [t.to("cuda") for t in (world.means, world.quats, world.scales, world.opacities, world.sh)]
    for px in (256, 512):
        cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 0.75, 26.0, px, px).to("cuda")
        render_gaussians(*args, cams)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            r = render_gaussians(*args, cams)
        torch.cuda.synchronize()
        print(json.dumps({"renderer": "auto", "on_cuda": r.image.is_cuda, "gaussians": len(world.means),
                          "resolution": px, "frames_per_s": round(repeats / (time.perf_counter() - t), 1)}),
              flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    check_mmvdm(args.preset, args.repeats)
    check_gaussians(10 * args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
