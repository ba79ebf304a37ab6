"""Benchmark: one training step (forward + backward) of the embedded default's networks in float32 and under
bfloat16 autocast (``precision="bf16"`` of ``morph4d train`` / ``morph4d train-vae``), on this CPU.

Reports seconds per step and the fp32 / bf16 ratio for the small MMVDM (batch 4, 4 views x 5 frames at 64 px:
a stage-1 resolution of the ``small`` curriculum) and the small autoencoder (batch 8 x 9 frames at 64 px: its
``small`` preset). bf16 pays off only where the CPU computes in bfloat16 natively (avx512_bf16 or AMX; printed);
elsewhere PyTorch emulates it and it is slower.
Usage: python benchmarks/bench_precision.py [--repeats 5]
"""

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_conditioning.py

import torch
from timing import median_seconds  # benchmarks/timing.py

from morph4d.models.mmvdm import MMVDM, MMVDMConfig
from morph4d.models.vae import VAE_PRESETS, CausalVideoAutoencoder
from morph4d.training.train import autocast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    model = MMVDM(MMVDMConfig(), generator=g)
    B, V, F, C = 4, 4, 2, model.config.conditioning_channels    # 5 frames = 2 latent frames
    x, cond = torch.randn(B, V, F, 16, 8, 8, generator=g), torch.randn(B, V, F, C, 8, 8, generator=g)
    ref, ref_cond = torch.randn(B, 16, 8, 8, generator=g), torch.randn(B, C, 8, 8, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    vae = CausalVideoAutoencoder(VAE_PRESETS["small"], generator=g)
    video = torch.rand(8, 1, 9, 3, 64, 64, generator=g)

    def mmvdm_step(precision):
        def step():
            model.zero_grad(set_to_none=True)
            with autocast(precision, "cpu"):
                out = model(x, cond, ref, ref_cond, t)
            out.float().square().mean().backward()
        return step

    def vae_step(precision):
        def step():
            vae.zero_grad(set_to_none=True)
            with autocast(precision, "cpu"):
                mean, _ = vae.posterior(video)
                recon = vae.decode(mean, clamp=False)
            (recon.float() - video).abs().mean().backward()
        return step

    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bfloat16 on this CPU: {native}")
    for name, make in (("MMVDM small", mmvdm_step), ("autoencoder small", vae_step)):
        fp32, bf16 = median_seconds(make("fp32"), args.repeats), median_seconds(make("bf16"), args.repeats)
        print(f"{name:18s} fp32 {fp32:.3f} s/step   bf16 {bf16:.3f} s/step   fp32/bf16 = {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
