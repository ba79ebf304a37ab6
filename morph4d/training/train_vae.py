"""Training our ``CausalVideoAutoencoder`` on dataset windows, in the style of ``morph4d.training.train``.

Loss per step: L1 reconstruction of the [0, 1] video + L1 of its spatial finite differences (an edge
term standing in for a perceptual loss: no pretrained network to download, and it keeps edges sharp
where plain L1 blurs) + ``kl_weight`` x the KL divergence of the posterior to N(0, I). At the end the
latent ``scaling_factor`` is set to 1 / std of the posterior means over a few fixed batches (as
CogVideoX's 1.15258426 was), and the weights are written with ``save_pretrained`` to ``<out>/vae``.

Same determinism as ``morph4d.training.train``: step s draws its windows and posterior noise from a generator
seeded by (seed, s); checkpoints (``checkpoint.pt``) hold the model and optimizer states, the step and
torch's RNG state, so a killed run resumes to the same weights.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from morph4d.data.format import mix_seed
from morph4d.errors import Morph4DError
from morph4d.io import write_json
from morph4d.models.vae import VAE_PRESETS, CausalVideoAutoencoder
from morph4d.training.curriculum import Stage, VAETrainConfig
from morph4d.training.train import (
    CHECKPOINT,
    CsvLog,
    TrainData,
    autocast,
    config_text,
    load_checkpoint,
    save_checkpoint,
)

LOG_FIELDS = ("step", "loss", "l1", "kl", "lr", "V", "F", "D", "seconds")


def vae_losses(vae: CausalVideoAutoencoder, video: torch.Tensor, cfg: VAETrainConfig,
               g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, L1 + edge reconstruction, KL) of a video batch (B, V, F, 3, H, W) in [0, 1]."""
    mean, logvar = (m.float() for m in vae.posterior(video))                         # (B, V, F_lat, 16, h, w)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g).to(mean)
    z = z * vae.scaling_factor
    if cfg.latent_noise > 0:   # per video a noise std uniform in [0, latent_noise]: clean and off latents alike
        std = cfg.latent_noise * torch.rand(z.shape[:2], generator=g).to(z)
        z = z + std[:, :, None, None, None, None] * torch.randn(z.shape, generator=g).to(z)
    recon = vae.decode(z, clamp=False).float()                                       # (B, V, F, 3, H, W)
    err = recon - video
    rec = err.abs().mean() + cfg.edge_weight * ((err.diff(dim=-1).abs().mean() + err.diff(dim=-2).abs().mean()))
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
    return rec + cfg.kl_weight * kl, rec, kl


def train_vae(cfg: VAETrainConfig, out_dir, stop_after: int | None = None, log=print) -> Path:
    """Run (or resume) ``cfg`` in ``out_dir``; writes ``<out>/vae`` (``save_pretrained``) at the end."""
    out = Path(out_dir)
    if cfg.decoder_only and not cfg.init:
        raise Morph4DError(f"preset {cfg.name!r} fine-tunes the decoder of a trained autoencoder: pass --init DIR "
                           f"(a save_pretrained folder, e.g. RUN/vae of `morph4d train-vae --preset small`)")
    res, image_res = (cfg.views, cfg.frames, cfg.resolution), (1, 1, cfg.resolution)
    data = TrainData(cfg.datasets, cfg.weights, [res] + [image_res] * (cfg.image_fraction > 0), cfg.seed,
                     conditioning=False)
    stage, image_stage = Stage(cfg.iterations, cfg.lr, (res,)), Stage(cfg.iterations, cfg.lr, (image_res,))
    state = load_checkpoint(out / CHECKPOINT, cfg)
    if cfg.init is not None:
        vae = CausalVideoAutoencoder.from_pretrained(cfg.init).train()
    else:
        vae = CausalVideoAutoencoder(VAE_PRESETS[cfg.vae], generator=torch.Generator().manual_seed(cfg.seed))
    data.validation(res)   # reads a first window: broken images are refused before the run folder is written
    write_json(out / "config.json", cfg.to_json())
    if cfg.decoder_only:
        vae.encoder.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=cfg.lr)
    step = 0
    if state is None and cfg.init is None and vae.config.architecture == "patch":     # start from the patches' PCA (init_patch_pca)
        g = torch.Generator().manual_seed(mix_seed("vae-pca", cfg.seed))
        vae.init_patch_pca(torch.cat([data.batch(stage, cfg.batch_size, -100 - k, g)[1]["images"]
                                      for k in range(cfg.pca_batches)]))
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resuming {out} at step {step}")
    logger = CsvLog(out / "log.csv", LOG_FIELDS, keep_until=step)
    last = cfg.total_steps if stop_after is None else min(stop_after, cfg.total_steps)
    while step < last:
        start = time.perf_counter()
        g = torch.Generator().manual_seed(mix_seed("vae-step", cfg.seed, step))
        images = bool(torch.rand((), generator=g) < cfg.image_fraction)                # 1. data
        (V, F, D), batch = data.batch(image_stage if images else stage,
                                      cfg.image_batch_size if images else cfg.batch_size, step, g)
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        vae.train()
        with autocast(cfg.precision, "cpu"):
            loss, rec, kl = vae_losses(vae, batch["images"], cfg, g)                   # 2. forward + losses
        opt.zero_grad(set_to_none=True)
        loss.backward()                                                                # 3. backward
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()                                                                     # 4. step
        step += 1
        if step % cfg.log_every == 0 or step == cfg.total_steps:                       # 5. log / checkpoint
            logger.write({"step": step, "loss": repr(loss.item()), "l1": repr(rec.item()), "kl": repr(kl.item()),
                          "lr": cfg.lr_at(step - 1), "V": V, "F": F, "D": D,
                          "seconds": f"{time.perf_counter() - start:.3f}"})
        if step % cfg.checkpoint_every == 0 or step == last:
            save_checkpoint(out / CHECKPOINT, {"config": config_text(cfg), "step": step, "data_position": step,
                                               "model": vae.state_dict(), "optimizer": opt.state_dict(),
                                               "torch_rng": torch.get_rng_state()})
    if step == cfg.total_steps:
        scale = vae.scaling_factor if cfg.decoder_only else latent_scale(vae, data, stage, cfg)
        final = CausalVideoAutoencoder(replace(vae.config, scaling_factor=scale))
        final.load_state_dict(vae.state_dict())
        final.save_pretrained(out / "vae")
        log(f"done: {step} steps; scaling_factor {scale:.6f}; weights in {out / 'vae'}")
    return out


@torch.no_grad()
def latent_scale(vae: CausalVideoAutoencoder, data: TrainData, stage: Stage, cfg: VAETrainConfig) -> float:
    """1 / std of the unscaled posterior means over ``cfg.scale_batches`` fixed batches."""
    vae.eval()
    means = []
    for k in range(cfg.scale_batches):
        g = torch.Generator().manual_seed(mix_seed("vae-scale", cfg.seed, k))
        _, batch = data.batch(stage, cfg.batch_size, -1 - k, g)
        means.append(vae.posterior(batch["images"])[0].flatten())
    return float(1.0 / torch.cat(means).std().clamp(min=1e-6))


__all__ = ["vae_losses", "train_vae", "latent_scale"]
