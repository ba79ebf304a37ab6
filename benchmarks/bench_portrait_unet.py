"""IM-Portrait's U-Net on this CPU (issue 18, "Speed"): its FLOP rate against the machine's matmul rate, forward
and forward + backward, for the ``small`` preset on one clip; and the sampling time per frame
(``portrait.sample``). ``python benchmarks/bench_portrait_unet.py [--preset small] [--frames 8] [--threads N]``.

FLOPs are counted by ``torch.utils.flop_counter`` (2 per multiply-add, convolutions and attention matmuls; not
norms and activations); the matmul rate is a float32 1024 x 1024 x 1024 product. The ratio says how much of the
CPU's arithmetic the network's layers use (small convolutions and attention over few tokens run far below it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import median_seconds  # noqa: E402  (benchmarks/timing.py)

from morph4d.models.portrait_unet import PortraitUNet, PortraitUNetConfig  # noqa: E402
from morph4d.threads import DEFAULT_THREADS, configure_threads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = ap.parse_args()
    configure_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    matmul = 2 * 1024 ** 3 / median_seconds(lambda: a @ b, 5)
    cfg = PortraitUNetConfig.preset(args.preset)
    net = PortraitUNet(cfg, generator=torch.Generator().manual_seed(0))
    S = cfg.sample_size
    x = torch.randn(1, args.frames, cfg.frame_channels, S, S)
    t, ref = torch.tensor([500]), torch.randn(1, 6, S, S)

    def forward():
        with torch.no_grad():
            net(x, t, ref)

    def train_step():
        out = net(x, t, ref)
        (out["front"].mean() + out["alpha"].mean()).backward()
    with FlopCounterMode(display=False) as fc:
        forward()
    f_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        train_step()
    t_flops = fc.get_total_flops()
    f_s, t_s = median_seconds(forward, 3), median_seconds(train_step, 3)
    print(f"{args.preset}: {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters, {args.frames} frames "
          f"at {S} px\n")
    print("| | GFLOP | seconds | GFLOP/s | x matmul rate |")
    print("|---|---|---|---|---|")
    print(f"| matmul 1024^3 (float32) | | | {matmul / 1e9:.1f} | 1.00 |")
    for name, flops, sec in (("forward", f_flops, f_s), ("forward + backward", t_flops, t_s)):
        print(f"| {name} | {flops / 1e9:.2f} | {sec:.3f} | {flops / sec / 1e9:.1f} | {flops / sec / matmul:.2f} |")
    print(f"\nper frame: forward {f_s / args.frames * 1000:.1f} ms")
    # sampling: one clip with a first frame (3 network passes per step: two guidance scales), 20 DDIM steps
    from morph4d.cameras import Cameras, look_at
    from morph4d.diffusion.schedule import Diffusion, DiffusionConfig
    from morph4d.portrait.mpi import plane_depths
    from morph4d.portrait.sample import sample_clip
    R, tr = look_at(torch.tensor([[0.0, 0.0, 0.75]]), torch.zeros(1, 3))
    f = S / (2 * 0.2309)                                                   # tan(13 deg): 26 deg field of view
    cam = Cameras(R, tr, torch.tensor([[[f, 0, S / 2], [0, f, S / 2], [0, 0, 1]]]), S, S)
    cond = torch.cat([torch.rand(args.frames, 3, S, S) * 2 - 1, torch.ones(args.frames, 1, S, S),
                      torch.rand(args.frames, cfg.frame_channels - 7, S, S) * 2 - 1], 1)   # UV [+ projection]
    d = Diffusion(DiffusionConfig(snr_shift_scale=1.0))
    clip = median_seconds(lambda: sample_clip(net.eval(), d, cond, ref[0], plane_depths(0.75, cfg.planes).float(),
                                              cam, 20, torch.Generator().manual_seed(0)), 1)
    print(f"sampling (20 DDIM steps, two-scale guidance = 3 passes per step): {clip / args.frames:.2f} s per frame "
          f"({clip:.1f} s per {args.frames}-frame clip); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
