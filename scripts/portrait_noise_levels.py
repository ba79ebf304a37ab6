"""Diagnose an IM-Portrait U-Net by noise level: the truth of one training batch noised at t, the net's MPI rendered
back, PSNR against the clean target (first frame given / dropped); then at t = 999 with the item's own reference,
another item's and none (does the reference move the outputs?); the reference projection channels, where the
network has them, go with the reference.
    usage: .venv/bin/python scripts/portrait_noise_levels.py UNET DATA"""
import sys

import torch

from morph4d.diffusion.schedule import Diffusion, DiffusionConfig
from morph4d.metrics import psnr
from morph4d.models.portrait_unet import FRAME_CHANNELS, PortraitUNet
from morph4d.portrait.mpi import render_mpi
from morph4d.portrait.objective import frame_mpi
from morph4d.portrait.train import Batches, train_preset

torch.manual_seed(0)
net = PortraitUNet.from_pretrained(sys.argv[1]).eval()
cfg = train_preset("small", data=(sys.argv[2],))
b = Batches(cfg, 64, 16, 1000)
d = Diffusion(DiffusionConfig(snr_shift_scale=1.0))
batch = b(123456, "bootstrap")
x0 = batch["frames"][:, :, :3]
for drop_first in (False, True):
    for t in (50, 300, 600, 900, 999):
        g = torch.Generator().manual_seed(1)
        frames = batch["frames"].clone()
        frames[:, :, :3] = d.add_noise(x0, torch.randn(x0.shape, generator=g), torch.full((2,), t))
        if drop_first:
            frames[:, :, 3:7] = 0
        with torch.no_grad():
            out = net(frames, torch.full((2,), t), batch["reference"])
        p = []
        for i in range(2):
            for f in range(5):
                cam = batch["mpi_cams"][i][[f]]
                r = render_mpi(frame_mpi(out, i, f, batch["depths"][i], cam), cam).rgb[0]
                p.append(psnr(r.clamp(0, 1), batch["target"][i, f]))
        print(f"first-frame {'dropped' if drop_first else 'given  '} t={t}: x0 PSNR {sum(p)/len(p):.2f} dB")
# does the reference move the outputs? t=999, first frame dropped: own reference vs the other item's vs none
frames = batch["frames"].clone()
frames[:, :, :3] = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
frames[:, :, 3:7] = 0
T = torch.full((2,), 999)
swapped, none = frames.clone(), frames.clone()       # the reference projection channels (10:) go with the reference
swapped[:, :, FRAME_CHANNELS:] = frames[:, :, FRAME_CHANNELS:].flip(0)
none[:, :, FRAME_CHANNELS:] = 0
with torch.no_grad():
    outs = {"own": net(frames, T, batch["reference"]), "swapped": net(swapped, T, batch["reference"].flip(0)),
            "none": net(none, T, torch.zeros_like(batch["reference"]))}
for k, out in outs.items():
    p = []
    for i in range(2):
        for f in range(5):
            cam = batch["mpi_cams"][i][[f]]
            p.append(psnr(render_mpi(frame_mpi(out, i, f, batch["depths"][i], cam), cam).rgb[0].clamp(0, 1), batch["target"][i, f]))
    print(f"reference {k}: x0 PSNR at t=999 {sum(p)/len(p):.2f} dB; front mean diff vs own "
          f"{(out['front'] - outs['own']['front']).abs().mean():.4f}")
