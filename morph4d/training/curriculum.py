"""MVP4D's training curriculum (§3.3, Table 3, S2.2) as frozen presets, and its per-step random choices.

A run is a list of ``Stage``s. Every step draws one resolution V x F x D uniformly from the stage's list
(all items of a batch share it), a generation mode per item, and a conditioning dropout per item:

- mode (§3.3): in stages 2-3, "given views" with p = 0.25 if V > 1 (the first half of the views are
  given for every frame) and "given frames" with p = 0.25 if the window has more than 3 latent frames
  (the first 3 latent frames are given); both -> mode 4, views only -> 2, frames only -> 3, neither -> 1.
  Stage 1 trains mode 1 only.
- conditioning dropout (S2.2): 10% of items see every conditioning signal and the reference zeroed, the
  unconditional branch of ``sampling.unconditional_inputs`` used by classifier-free guidance.

Every function takes a ``torch.Generator`` and draws the same number of numbers whatever the outcome,
so one step's choices never shift the next step's (the trainer seeds one generator per step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from morph4d.conditioning.projection import PROJECTION_VERSION
from morph4d.diffusion.sampling import mode_mask
from morph4d.errors import Morph4DError
from morph4d.models.latent import latent_frames

PRECISIONS = ("fp32", "bf16")   # training arithmetic (weights and optimizer states stay float32)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise Morph4DError(f"precision must be one of {PRECISIONS}, got {precision!r}")


GIVEN_FRAMES = 3   # MVP4D §3.3: mode 3 continues from the first 3 latent frames (the last 9 video frames)


@dataclass(frozen=True)
class Stage:
    iterations: int
    lr: float
    resolutions: tuple[tuple[int, int, int], ...]   # (V views, F frames, D px), drawn uniformly per step
    p_given_views: float = 0.0                       # mode 2 (or 4) when V > 1
    p_given_frames: float = 0.0                      # mode 3 (or 4) when the window has > 3 latent frames

    def __post_init__(self):
        if self.iterations < 1 or self.lr <= 0 or not self.resolutions:
            raise Morph4DError(f"a stage needs iterations >= 1, lr > 0 and resolutions, got {self}")
        for V, F, D in self.resolutions:
            latent_frames(F)   # F = 1 + 4k
            if V < 1 or D < 8 or D % 8:
                raise Morph4DError(f"resolution {V}x{F}x{D}: need V >= 1 and D a positive multiple of 8")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a diffusion training run depends on; ``asdict`` of it is the run's config.json."""
    name: str
    stages: tuple[Stage, ...]
    batch_size: int                      # global: split over Accelerate's processes
    model: str = "small"                 # morph4d.models.PRESETS name (ignored with --init)
    vae: str = "small"                   # VAE_PRESETS name used when no --vae folder is given; "cogvideox":
                                         # the run needs --vae (CogVideoX-2B's VAE folder)
    cond_dropout: float = 0.1            # MVP4D S2.2 / CAP4D: 10% unconditional
    reference_projection: bool = False   # ours (issue 17): condition on the encoded reference projection too
    #                                      (ConditioningConfig.reference_projection; the MMVDM's 76-channel layout)
    projection_version: int = PROJECTION_VERSION  # the make of that projection the network is trained on
    #                                      (conditioning.projection.PROJECTION_MAKES; generation uses the newest)
    snr_shift_scale: float = 3.0         # noise schedule (morph4d.diffusion.schedule); stored in the MMVDM's config.json
    ema_decay: float = 0.999
    weight_decay: float = 0.0            # AdamW
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    gradient_checkpointing: bool = False
    precision: str = "fp32"              # "bf16": latent encoding and the MMVDM's forward under bfloat16 autocast
    #                                      (CPUs with native bfloat16: avx512_bf16 / AMX); on CUDA the MMVDM's
    #                                      forward is bf16 either way
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 100
    sample_every: int = 500
    sample_steps: int = 8                # DDIM steps of the sample grids
    datasets: tuple[str, ...] = ()       # filled by the CLI: dataset folders
    weights: tuple[float, ...] = ()      # their mixing weights (renormalised over those fitting a resolution)
    vae_path: str | None = None
    init: str | None = None

    def __post_init__(self):
        if self.batch_size < 1 or not 0 <= self.cond_dropout < 1 or not 0 <= self.ema_decay < 1:
            raise Morph4DError(f"invalid training config {self.name}: batch_size >= 1, dropout and ema_decay in [0, 1)")
        if self.weights and len(self.weights) != len(self.datasets):
            raise Morph4DError(f"{len(self.weights)} weights for {len(self.datasets)} datasets")
        if any(w <= 0 for w in self.weights):
            raise Morph4DError(f"dataset weights must be > 0, got {self.weights}")
        check_precision(self.precision)

    @property
    def total_steps(self) -> int:
        return sum(s.iterations for s in self.stages)

    def stage_at(self, step: int) -> tuple[int, Stage]:
        """(1-based stage number, stage) of global step ``step`` (0-based)."""
        end = 0
        for k, s in enumerate(self.stages):
            end += s.iterations
            if step < end:
                return k + 1, s
        raise Morph4DError(f"step {step} is past the last stage ({self.total_steps} steps)")

    def to_json(self) -> dict:
        return asdict(self)


def _with_modes(*resolutions) -> dict:
    return {"resolutions": tuple(resolutions), "p_given_views": 0.25, "p_given_frames": 0.25}


# MVP4D Table 3: iterations, learning rate, V x F x D; batch 64 (§3.3).
PAPER = TrainConfig(
    name="paper", batch_size=64, model="paper", vae="cogvideox", gradient_checkpointing=True,
    checkpoint_every=1000, sample_every=2500, sample_steps=25, log_every=10,
    stages=(
        Stage(30_000, 1e-4, ((1, 49, 256), (2, 29, 256), (4, 9, 256), (12, 1, 256))),
        Stage(40_000, 5e-5, **_with_modes((1, 49, 512), (2, 29, 512), (4, 9, 512), (12, 1, 512), (8, 29, 512),
                                          (16, 9, 512), (4, 49, 256), (8, 29, 256))),
        Stage(5_000, 2e-5, **_with_modes((1, 49, 512), (4, 49, 512), (16, 1, 512))),
    ))

# this 2-core CPU: 64 px (8 x 8 latents), the embedded-default MMVDM (README "Embedded default"). The sizes
# follow the "small" sampling plan (4 key views x 17 frames, then clusters of 4 + 4 keys = 8 views x 17
# frames); 17 frames (5 latent frames) let stages 2-3 train mode 3 (it needs > 3 latent frames). Learning
# rates are three times Table 3's (a 10.6 M-parameter model trained for a few thousand steps; the first
# default used twice and its loss was still falling steadily at the end), same 1 : 0.5 : 0.2 ratio.
#
# Noise schedule: CogVideoX's with the SNR shift at 1 instead of 3. The shift of 3 suits CogVideoX's 13 x 60 x 90
# latents; on our 8 x 8 ones it leaves only 20% of training timesteps at SNR > 1 (34% with shift 1), where
# appearance is decided. Measured on validation identities (README "Embedded default"): +0.42 dB generated
# PSNR, every angle bin better, same data, autoencoder and step count.
#
# Arithmetic: bfloat16 autocast (this CPU has avx512_bf16): the network's forward + backward take ~0.5x float32's
# time (benchmarks/bench_precision.py); with data loading (head-model maps) a whole step ~0.8x here, which buys
# ~1.6x the iterations of the float32 recipe (3000 / 800 / 800) in the same time.
#
# Reference projection (ours, issue 17): the small preset conditions on it. Building it (the mesh and the matte
# sheet rasterized per view and frame, then encoded) makes a step 1.8-2x as long (stage 1 0.31 -> 0.61 s, stage 3
# 0.75 -> 1.38 s: benchmarks/bench_train_step.py), so the stages are 0.63x the 4800 / 1300 / 1200
# iterations of the 59-channel recipe to stay within the same 90-minute budget. The network trains on the first make
# of the projection (sheet 1 cm back, no mirror fill: ``projection_version=1``) and generates with the newest: the
# shipped default was trained so, and a retrain on the newest make scored lower on validation identities (6 seeds:
# 20.58 vs 20.89 dB anchored, 19.45 vs 20.54 without the anchor; README "Embedded default").
SMALL = TrainConfig(
    name="small", batch_size=4, model="small", vae="small", ema_decay=0.995, checkpoint_every=100,
    sample_every=500, log_every=1, snr_shift_scale=1.0, precision="bf16", reference_projection=True,
    projection_version=1,
    stages=(
        Stage(3000, 3e-4, ((1, 17, 64), (2, 9, 64), (4, 5, 64), (8, 1, 64))),
        Stage(800, 1.5e-4, **_with_modes((1, 17, 64), (4, 9, 64), (4, 17, 64), (8, 5, 64), (8, 1, 64))),
        Stage(750, 6e-5, **_with_modes((4, 17, 64), (8, 9, 64))),
    ))

# tests: a handful of steps per stage at 32 px with the tiny networks
TINY = TrainConfig(
    name="tiny", batch_size=2, model="tiny", vae="tiny", ema_decay=0.9, checkpoint_every=2, sample_every=4,
    sample_steps=2,
    stages=(
        Stage(2, 1e-3, ((1, 5, 32), (2, 5, 32), (3, 1, 32))),
        Stage(3, 5e-4, **_with_modes((1, 5, 32), (2, 5, 32), (3, 1, 32))),
        Stage(2, 2e-4, **_with_modes((2, 5, 32),)),
    ))

PRESETS = {c.name: c for c in (TINY, SMALL, PAPER)}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise Morph4DError(f"unknown training preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# ---------------------------------------------------------------------------------------------------
# per-step random choices
# ---------------------------------------------------------------------------------------------------

def sample_resolution(stage: Stage, g: torch.Generator) -> tuple[int, int, int]:
    """One (V, F, D) of the stage, uniformly (Table 3: "resolutions sampled uniformly")."""
    return stage.resolutions[int(torch.randint(len(stage.resolutions), (), generator=g))]


def sample_mode(stage: Stage, views: int, num_latent_frames: int, g: torch.Generator) -> int:
    """Generation mode 1-4 of one item (module doc). Always draws two uniforms."""
    u_views, u_frames = torch.rand(2, generator=g).tolist()
    given_views = views > 1 and u_views < stage.p_given_views
    given_frames = num_latent_frames > GIVEN_FRAMES and u_frames < stage.p_given_frames
    return {(False, False): 1, (True, False): 2, (False, True): 3, (True, True): 4}[(given_views, given_frames)]


def given_mask(mode: int, views: int, num_latent_frames: int) -> torch.Tensor:
    """(V, F_lat) bool, True where the latent is given: the first half of the views, the first 3 latent frames."""
    return mode_mask(mode, views, num_latent_frames, given_frames=GIVEN_FRAMES)


def sample_dropout(p: float, batch: int, g: torch.Generator) -> torch.Tensor:
    """(B,) bool, True where an item's conditioning and reference are dropped."""
    return torch.rand(batch, generator=g) < p


def sample_dataset(fitting: list[int], weights: list[float], g: torch.Generator) -> int:
    """Index of the dataset an item comes from: among ``fitting`` ones, proportional to ``weights``."""
    w = torch.tensor([weights[i] for i in fitting], dtype=torch.float64)
    return fitting[int(torch.multinomial(w, 1, generator=g))]


# ---------------------------------------------------------------------------------------------------
# the small video autoencoder's training presets (morph4d/training/train_vae.py runs them)
# ---------------------------------------------------------------------------------------------------

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


__all__ = ["VAETrainConfig", "VAE_TRAIN_PRESETS", "vae_preset", "Stage", "TrainConfig", "PRESETS", "PAPER", "SMALL", "TINY", "preset", "sample_resolution",
           "sample_mode", "given_mask", "sample_dropout", "sample_dataset", "GIVEN_FRAMES", "PRECISIONS",
           "check_precision"]
