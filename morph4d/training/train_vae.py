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

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from morph4d.data.format import mix_seed
from morph4d.errors import Morph4DError
from morph4d.io import write_json
from morph4d.models import VAE_PRESETS, CausalVideoAutoencoder
from morph4d.training.curriculum import Stage, check_precision
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


@dataclass(frozen=True)
class VAETrainConfig:
    name: str
    iterations: int
    lr: float
    batch_size: int
    views: int = 1                  # windows of V x F x D; the VAE sees every view as its own video
    frames: int = 9
    resolution: int = 64
    image_fraction: float = 0.0     # share of steps that train on single frames (spatial detail, ~frames x
    image_batch_size: int = 16      #   cheaper per item) with this batch size; frame 0 is encoded as an image
    vae: str = "small"              # VAE_PRESETS name
    kl_weight: float = 1e-6         # small: a near-deterministic autoencoder, as latent diffusion VAEs
    edge_weight: float = 1.0        # L1 of spatial finite differences
    grad_clip: float = 1.0
    warmup: int = 0                 # linear learning-rate warm-up steps
    cosine: bool = False            # cosine decay of the learning rate to 0 over the run (after the warm-up)
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 100
    scale_batches: int = 4          # batches whose latent std sets scaling_factor
    pca_batches: int = 8            # batches whose patches initialise a "patch" autoencoder (init_patch_pca)
    init: str | None = None         # start from this trained autoencoder (save_pretrained folder)
    decoder_only: bool = False      # with init: train the decoder only; encoder and scaling_factor stay, so
    #                                 latents (and an MMVDM trained on them) stay valid
    latent_noise: float = 0.0       # Gaussian noise on the scaled latents before decoding, std uniform in [0, this]
    #                                 per video: a decoder that tolerates imperfect latents (as the MMVDM's are)
    precision: str = "fp32"         # "bf16": forward under torch.autocast (bfloat16 matmuls/convolutions, float32
    #                                 weights and optimizer), on CUDA and on CPUs with native bfloat16
    #                                 (avx512_bf16 / AMX: ~4.8x faster steps here, benchmarks/bench_precision.py)
    datasets: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()

    def __post_init__(self):
        if self.iterations < 1 or self.lr <= 0 or min(self.batch_size, self.image_batch_size) < 1 \
                or self.kl_weight < 0 or not 0 <= self.image_fraction <= 1 or self.latent_noise < 0:
            raise Morph4DError(f"invalid VAE training config {self}")
        check_precision(self.precision)

    @property
    def total_steps(self) -> int:
        return self.iterations

    def lr_at(self, step: int) -> float:
        """Learning rate of (0-based) ``step``: linear warm-up, then constant or cosine-decayed to 0."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if not self.cosine:
            return self.lr
        progress = (step - self.warmup) / max(1, self.iterations - self.warmup)
        return self.lr * 0.5 * (1 + math.cos(math.pi * progress))

    def to_json(self) -> dict:
        return asdict(self)


VAE_TRAIN_PRESETS = {
    "tiny": VAETrainConfig("tiny", iterations=30, lr=2e-3, batch_size=2, frames=5, resolution=32, vae="tiny",
                           checkpoint_every=10, scale_batches=2),
    # the embedded default's: the patch autoencoder from its PCA initialisation (~27 dB at step 0), cosine-decayed
    # (0.23 s/step in bf16 here, 1.1 s in fp32: benchmarks/bench_precision.py)
    "small": VAETrainConfig("small", iterations=5000, lr=5e-4, batch_size=8, frames=9, resolution=64,
                            vae="small", warmup=50, cosine=True, checkpoint_every=100, precision="bf16"),
    # then its decoder alone, on latents with noise of std up to 0.3 (latents have unit std): fewer 8 x 8
    # block artefacts where the MMVDM's latents are off; needs --init with the autoencoder above
    "small_decoder": VAETrainConfig("small_decoder", iterations=300, lr=2e-4, batch_size=8, frames=9,
                                    resolution=64, vae="small", warmup=20, cosine=True, checkpoint_every=100,
                                    decoder_only=True, latent_noise=0.3),
}


def vae_preset(name: str, **overrides) -> VAETrainConfig:
    if name not in VAE_TRAIN_PRESETS:
        raise Morph4DError(f"unknown VAE training preset {name!r}; expected one of {sorted(VAE_TRAIN_PRESETS)}")
    return replace(VAE_TRAIN_PRESETS[name], **overrides)


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
    write_json(out / "config.json", cfg.to_json())
    if cfg.init is not None:
        vae = CausalVideoAutoencoder.from_pretrained(cfg.init).train()
    else:
        vae = CausalVideoAutoencoder(VAE_PRESETS[cfg.vae], generator=torch.Generator().manual_seed(cfg.seed))
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


__all__ = ["VAETrainConfig", "VAE_TRAIN_PRESETS", "vae_preset", "vae_losses", "train_vae", "latent_scale"]
