"""Video autoencoders with CogVideoX's latent layout (MVP4D §3.1, S2.2: the CogVideoX 3D VAE).

The layout, shared by both implementations:

- video ``(B, V, F, 3, H, W)``, float in [0, 1], ``F = 1 + 4k`` frames, ``H, W`` divisible by 8
- latents ``(B, V, 1 + k, 16, H/8, W/8)``: frame 0 is encoded alone, each following group of 4 frames into
  one latent frame (``morph4d.models.latent.latent_frames``); latents are already multiplied by the VAE's
  ``scaling_factor`` (the scale the diffusion model sees); ``decode`` divides it back out.

The VAE networks themselves (diffusers' and ours) work on ``(N, C, F, H, W)`` with values in [-1, 1].
``to_vae_layout`` / ``from_vae_layout`` below are the only place in morph4d that permutes between the two
layouts (REFERENCE §3: the CogVideoX transformer takes (B, F, C, H, W) and its VAE (B, C, F, H, W), a known
source of user errors). Each view is its own VAE item: views never mix inside the autoencoder.

Two implementations of ``VideoAutoencoder``:

- ``CogVideoXAutoencoder``: diffusers' ``AutoencoderKLCogVideoX`` loaded from a local CogVideoX folder
  (``<root>/vae/config.json`` + safetensors; never a hub), optional tiling for large frames. Its group norms
  pool statistics over chunks of frames, so it is causal only approximately; its decoder needs a fix-up for
  even latent frame counts (see ``_decode``).
- ``CausalVideoAutoencoder``: a small causal video autoencoder of our own with the same layout, so latent
  frame i depends only on frames <= 4i and an image encodes exactly like frame 0 of a video. Two
  architectures: ``"conv"`` (causal 3D convolutions padded by repeating frame 0, per-frame group norms, 3
  spatial and 2 temporal halvings) and ``"patch"`` (every 4-frame x 8 x 8 px patch is one latent pixel: a
  linear shortcut started from the patches' PCA, ``init_patch_pca``, plus residual blocks at latent
  resolution; the embedded default's). Weights are
  ours (trained in a later issue); ``save_pretrained`` writes ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import AutoencoderKLCogVideoX
from torch import nn

from morph4d.errors import Morph4DError
from morph4d.io import config_from_json, load_state_strict, load_weights, save_weights
from morph4d.models.latent import LATENT_CHANNELS, LATENT_FACTOR, TEMPORAL_FACTOR, check_frame_count, latent_frames

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# -- the one layout permutation ----------------------------------------------------------------------------
def to_vae_layout(x: torch.Tensor) -> torch.Tensor:
    """``(B, V, F, C, H, W)`` -> the VAE's ``(B * V, C, F, H, W)`` (item ``b * V + v``)."""
    if x.ndim != 6:
        raise Morph4DError(f"expected a (B, V, F, C, H, W) tensor, got shape {tuple(x.shape)}")
    return x.flatten(0, 1).permute(0, 2, 1, 3, 4)


def from_vae_layout(y: torch.Tensor, batch: int) -> torch.Tensor:
    """The VAE's ``(B * V, C, F, H, W)`` -> ``(B, V, F, C, H, W)``; inverse of ``to_vae_layout``."""
    if y.ndim != 5 or y.shape[0] % batch:
        raise Morph4DError(f"expected a (B * V, C, F, H, W) tensor with B = {batch}, got shape {tuple(y.shape)}")
    return y.permute(0, 2, 1, 3, 4).unflatten(0, (batch, -1))


def _check_video(video: torch.Tensor) -> None:
    if video.ndim != 6 or video.shape[3] != 3:
        raise Morph4DError(f"video must be (B, V, F, 3, H, W) in [0, 1], got shape {tuple(video.shape)}")
    check_frame_count(video.shape[2])
    H, W = video.shape[-2:]
    if H % LATENT_FACTOR or W % LATENT_FACTOR:
        raise Morph4DError(f"video height and width must be divisible by {LATENT_FACTOR}, got {W}x{H}")


def _check_output(y: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(y.shape) != tuple(expected):
        raise Morph4DError(f"the autoencoder returned shape {tuple(y.shape)}, expected {tuple(expected)} (diffusers' "
                           f"tiling gives wrong sizes unless the frames suit its tiles; its default 240 x 360 px "
                           f"tiles work at 256, 512 and 480 x 720 px; or load without tiling)")


class VideoAutoencoder(nn.Module, abc.ABC):
    """Shared interface: ``encode`` / ``decode`` in our layout; subclasses implement ``_moments``/``_decode``.

    ``slice_size`` (encode/decode): how many videos (views) go through the network at once; 1 bounds memory
    by one view (diffusers' "slicing"), larger values trade memory for speed. Results do not depend on it.
    """

    scaling_factor: float

    @abc.abstractmethod
    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, F, H, W)`` in [-1, 1] -> posterior mean and log-variance ``(N, 16, F_lat, H/8, W/8)``."""

    @abc.abstractmethod
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents ``(N, 16, F_lat, h, w)`` -> frames ``(N, 3, F, 8h, 8w)`` in about [-1, 1]."""

    @property
    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    def posterior(self, video: torch.Tensor, slice_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(B, V, F_lat, 16, H/8, W/8)`` of the unscaled latent posterior."""
        _check_video(video)
        x = to_vae_layout(video * 2 - 1).to(self._param)  # (B*V, 3, F, H, W) in [-1, 1]
        parts = [self._moments(x[s : s + slice_size]) for s in range(0, x.shape[0], slice_size)]
        mean, logvar = (torch.cat(p).float() for p in zip(*parts))
        B, V, F, _, H, W = video.shape
        _check_output(mean, (B * V, LATENT_CHANNELS, latent_frames(F), H // LATENT_FACTOR, W // LATENT_FACTOR))
        return from_vae_layout(mean, video.shape[0]), from_vae_layout(logvar.clamp(-30.0, 20.0), video.shape[0])

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None,
               slice_size: int = 1) -> torch.Tensor:
        """Latents ``(B, V, F_lat, 16, H/8, W/8)`` x ``scaling_factor``: the posterior mean, or a sample of the
        posterior drawn with ``generator`` when one is given."""
        mean, logvar = self.posterior(video, slice_size)
        z = mean
        if generator is not None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise
        return z * self.scaling_factor

    def encode_image(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> latents ``(B, 16, H/8, W/8)`` (a one-frame video)."""
        if images.ndim != 4:
            raise Morph4DError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        return self.encode(images[:, None, None], generator)[:, 0, 0]

    def decode(self, latents: torch.Tensor, slice_size: int = 1, clamp: bool = True) -> torch.Tensor:
        """Latents ``(B, V, F_lat, 16, h, w)`` (scaled) -> video ``(B, V, 1 + 4 (F_lat - 1), 3, 8h, 8w)`` in [0, 1]
        (``clamp=False`` leaves values outside [0, 1], e.g. for reconstruction losses)."""
        if latents.ndim != 6 or latents.shape[3] != LATENT_CHANNELS:
            raise Morph4DError(f"latents must be (B, V, F_lat, {LATENT_CHANNELS}, h, w), got shape "
                               f"{tuple(latents.shape)}")
        z = to_vae_layout(latents / self.scaling_factor).to(self._param)  # (B*V, 16, F_lat, h, w)
        parts = [self._decode(z[s : s + slice_size]) for s in range(0, z.shape[0], slice_size)]
        frames = torch.cat(parts).float()  # (B*V, 3, F, H, W)
        B, V, F, _, h, w = latents.shape
        _check_output(frames, (B * V, 3, 1 + TEMPORAL_FACTOR * (F - 1), h * LATENT_FACTOR, w * LATENT_FACTOR))
        video = from_vae_layout(frames, B) * 0.5 + 0.5
        return video.clamp(0.0, 1.0) if clamp else video


# -- diffusers' CogVideoX VAE --------------------------------------------------------------------------------
class CogVideoXAutoencoder(VideoAutoencoder):
    """diffusers' ``AutoencoderKLCogVideoX`` behind our layout. Load with ``from_pretrained(root)``."""

    def __init__(self, vae: AutoencoderKLCogVideoX):
        super().__init__()
        cfg = vae.config
        spatial = 2 ** (len(cfg.block_out_channels) - 1)
        # the encoder halves time in its first log2(ratio) blocks, but the last block never downsamples
        temporal = 2 ** min(int(math.log2(cfg.temporal_compression_ratio)), len(cfg.block_out_channels) - 1)
        if (cfg.latent_channels, spatial, temporal) != (LATENT_CHANNELS, LATENT_FACTOR, TEMPORAL_FACTOR):
            raise Morph4DError(f"expected CogVideoX's latent layout ({LATENT_CHANNELS} channels, {LATENT_FACTOR}x "
                               f"spatial, {TEMPORAL_FACTOR}x temporal: 4 blocks, temporal_compression_ratio 4), got "
                               f"{cfg.latent_channels} channels, {spatial}x spatial, {temporal}x temporal")
        if cfg.shift_factor is not None or cfg.latents_mean is not None or cfg.invert_scale_latents:
            raise Morph4DError("expected a CogVideoX-2B/5B VAE (latents scaled by scaling_factor only); this one "
                               "sets shift_factor, latents_mean or invert_scale_latents")
        self.vae = vae
        self.scaling_factor = float(cfg.scaling_factor)

    @classmethod
    def from_pretrained(cls, root: str | Path, *, tiling: bool = False, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "CogVideoXAutoencoder":
        """Load ``<root>/vae`` of a local diffusers CogVideoX folder (no hub access). ``tiling`` encodes and
        decodes large frames in overlapping tiles (diffusers' tiling: bounds memory, may leave faint seams; with
        its default 240 x 360 px tiles it keeps the layout at 256, 512 and 480 x 720 px, at other sizes it may
        return wrong shapes, which ``encode``/``decode`` report as a ValueError)."""
        folder = Path(root) / "vae"
        expected = [folder / CONFIG_NAME, folder / "diffusion_pytorch_model.safetensors"]
        if not all(p.is_file() for p in expected):
            raise Morph4DError(f"{root} is not a local diffusers CogVideoX folder: expected "
                               f"{' and '.join(str(p) for p in expected)}")
        vae = AutoencoderKLCogVideoX.from_pretrained(folder, local_files_only=True, torch_dtype=dtype,
                                                     low_cpu_mem_usage=False)  # no `accelerate` needed
        if tiling:
            vae.enable_tiling()
        return cls(vae.to(device).eval())

    def _moments(self, x):
        dist = self.vae.encode(x).latent_dist
        return dist.mean, dist.logvar

    def _decode(self, z):
        frames = self.vae.decode(z).sample
        if z.shape[2] % 2 == 0:
            # diffusers decodes latents in chunks of 2 and keeps frame 0 alone only when the first chunk is odd
            # (3 latents), so an even count (e.g. 8 latents = 29 frames) comes back with latent 0 widened to 4
            # identical frames (its causal convolutions see nothing else): keep one -> 1 + 4 (F_lat - 1) frames
            frames = torch.cat([frames[:, :, :1], frames[:, :, TEMPORAL_FACTOR:]], 2)
        return frames


# -- our small causal video autoencoder ---------------------------------------------------------------------
@dataclass(frozen=True)
class CausalVAEConfig:
    channels: tuple[int, int, int] = (32, 64, 128)  # width of each resolution level (full, 1/2, 1/4; 1/8 = mid)
    layers_per_level: int = 1                       # residual blocks per level
    norm_groups: int = 8                            # GroupNorm groups (each frame normalised on its own)
    scaling_factor: float = 1.0                     # latent std normaliser; set from data after training
    architecture: str = "conv"                      # "conv": the conv pyramid above; "patch": see _PatchEncoder
    patch_width: int = 192                          # "patch": channels at latent resolution
    patch_blocks: int = 2                           # "patch": residual blocks in the encoder and in the decoder

    def __post_init__(self):
        if len(self.channels) != 3:
            raise Morph4DError(f"channels must list 3 level widths (3 halvings = 8x), got {self.channels}")
        if any(c % self.norm_groups for c in self.channels):
            raise Morph4DError(f"every width in {self.channels} must be divisible by norm_groups={self.norm_groups}")
        if self.layers_per_level < 1 or self.scaling_factor <= 0:
            raise Morph4DError("layers_per_level must be >= 1 and scaling_factor > 0")
        if self.architecture not in ("conv", "patch"):
            raise Morph4DError(f"architecture must be 'conv' or 'patch', got {self.architecture!r}")
        if self.patch_width % self.norm_groups or self.patch_blocks < 1:
            raise Morph4DError(f"patch_width must be divisible by norm_groups={self.norm_groups}, patch_blocks >= 1")


VAE_PRESETS = {
    "tiny": CausalVAEConfig(channels=(8, 8, 16), norm_groups=4),   # tests
    "tiny_patch": CausalVAEConfig(norm_groups=4, architecture="patch", patch_width=16, patch_blocks=1),  # tests
    "small_conv": CausalVAEConfig(),                                 # 5.3 M parameters (the first default's)
    "small": CausalVAEConfig(architecture="patch"),                  # 5.7 M parameters, PCA-initialised
}


class _CausalConv3d(nn.Module):
    """3D convolution over (current, past) frames only: time is padded on the left by repeating frame 0
    (CogVideoX's "first" padding), space by zeros. Optional stride 2 in space (per frame). ``time_kernel=1``
    is a per-frame 2D convolution."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, spatial_stride: int = 1, time_kernel: int | None = None):
        super().__init__()
        time_kernel = kernel if time_kernel is None else time_kernel
        self.time_pad = time_kernel - 1
        self.conv = nn.Conv3d(cin, cout, (time_kernel, kernel, kernel), stride=(1, spatial_stride, spatial_stride),
                              padding=(0, kernel // 2, kernel // 2))

    def forward(self, x):  # (N, C, T, H, W)
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], 2)
        return self.conv(x)


class _FrameGroupNorm(nn.GroupNorm):
    """GroupNorm of each frame on its own, so statistics never leak from future frames (keeps causality)."""

    def forward(self, x):  # (N, C, T, H, W)
        N, T = x.shape[0], x.shape[2]
        y = super().forward(x.transpose(1, 2).flatten(0, 1))  # (N*T, C, H, W)
        return y.unflatten(0, (N, T)).transpose(1, 2)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _FrameGroupNorm(groups, cin), _CausalConv3d(cin, cout)
        self.norm2, self.conv2 = _FrameGroupNorm(groups, cout), _CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def _halve_time(x):
    """``(N, C, 1 + 2k, H, W)`` -> ``(N, C, 1 + k, H, W)``: frame 0 alone, then the mean of each pair."""
    return torch.cat([x[:, :, :1], x[:, :, 1:].unflatten(2, (-1, 2)).mean(3)], 2)


def _double_time(x):
    """``(N, C, 1 + k, H, W)`` -> ``(N, C, 1 + 2k, H, W)``: frame 0 alone, then each frame twice."""
    return torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(2, dim=2)], 2)


class _Level(nn.Module):
    """Residual blocks, then a 2x spatial resampling (and 2x temporal where ``time``)."""

    def __init__(self, cin: int, cout: int, cfg: CausalVAEConfig, down: bool, time: bool):
        super().__init__()
        self.blocks = nn.Sequential(*[_ResBlock(cin if i == 0 else cout, cout, cfg.norm_groups)
                                      for i in range(cfg.layers_per_level)])
        self.resample = _CausalConv3d(cout, cout, spatial_stride=2 if down else 1)
        self.down, self.time = down, time

    def forward(self, x):
        x = self.blocks(x)
        if self.down:
            x = self.resample(x)
            return _halve_time(x) if self.time else x
        x = _double_time(x) if self.time else x
        return self.resample(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


_PATCH = TEMPORAL_FACTOR * LATENT_FACTOR * LATENT_FACTOR * 3   # values of one (4 frames x 8 x 8 px) RGB patch


class _PatchBlock(nn.Module):
    """Residual block at latent resolution: a causal 3D convolution (3 latent frames) then a per-frame 2D one."""

    def __init__(self, width: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _FrameGroupNorm(groups, width), _CausalConv3d(width, width)
        self.norm2, self.conv2 = _FrameGroupNorm(groups, width), _CausalConv3d(width, width, time_kernel=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


def _to_patches(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 1 + 4k, H, W)`` -> ``(N, 768, 1 + k, H/8, W/8)``: frame 0 repeated 4 times ("first" padding, so
    latent 0 sees frame 0 only), then every group of 4 frames x 8 x 8 pixels becomes one latent pixel."""
    N, C, T, H, W = x.shape
    x = torch.cat([x[:, :, :1].expand(-1, -1, TEMPORAL_FACTOR - 1, -1, -1), x], 2)        # (N, 3, 4 (1 + k), H, W)
    x = x.reshape(N, C, -1, TEMPORAL_FACTOR, H // LATENT_FACTOR, LATENT_FACTOR, W // LATENT_FACTOR, LATENT_FACTOR)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(N, _PATCH, -1, H // LATENT_FACTOR, W // LATENT_FACTOR)


def _from_patches(p: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_to_patches`` keeping one copy of frame 0: ``(N, 768, 1 + k, h, w)`` -> ``(N, 3, 1 + 4k, 8h,
    8w)`` (latent 0's four frames are all frame 0; its last one is kept)."""
    N, _, L, h, w = p.shape
    x = p.reshape(N, 3, TEMPORAL_FACTOR, LATENT_FACTOR, LATENT_FACTOR, L, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(N, 3, L * TEMPORAL_FACTOR, h * LATENT_FACTOR, w * LATENT_FACTOR)
    return x[:, :, TEMPORAL_FACTOR - 1:]


class _PatchEncoder(nn.Module):
    """``architecture="patch"``: every (4 frames x 8 x 8 px) patch is one latent pixel from the start.

    A linear map of the raw patch (a learned PCA-like shortcut, as the space-to-channel shortcuts of
    deep-compression autoencoders) plus a non-linear branch over neighbouring patches (residual blocks at latent
    resolution). All the work happens at 1/8 resolution, so a step costs a fraction of the conv pyramid's and
    the reconstruction is good early in training (the shortcut alone is the optimal linear code).
    """

    def __init__(self, cfg: CausalVAEConfig):
        super().__init__()
        w, g = cfg.patch_width, cfg.norm_groups
        self.shortcut = nn.Conv3d(_PATCH, LATENT_CHANNELS, 1)
        self.embed = nn.Conv3d(_PATCH, w, 1)
        self.blocks = nn.Sequential(*[_PatchBlock(w, g) for _ in range(cfg.patch_blocks)])
        self.head = nn.Sequential(_FrameGroupNorm(g, w), nn.SiLU(), nn.Conv3d(w, 2 * LATENT_CHANNELS, 1))

    def forward(self, x):  # (N, 3, 1 + 4k, H, W) in [-1, 1] -> (N, 32, 1 + k, H/8, W/8) moments
        p = _to_patches(x)
        moments = self.head(self.blocks(self.embed(p)))
        return moments + torch.cat([self.shortcut(p), torch.zeros_like(moments[:, LATENT_CHANNELS:])], 1)


class _PatchDecoder(nn.Module):
    """Mirror of ``_PatchEncoder`` plus a light full-resolution 2D refinement (residual) across patch seams."""

    def __init__(self, cfg: CausalVAEConfig):
        super().__init__()
        w, g = cfg.patch_width, cfg.norm_groups
        self.shortcut = nn.Conv3d(LATENT_CHANNELS, _PATCH, 1)
        self.embed = _CausalConv3d(LATENT_CHANNELS, w)
        self.blocks = nn.Sequential(*[_PatchBlock(w, g) for _ in range(cfg.patch_blocks)])
        self.head = nn.Sequential(_FrameGroupNorm(g, w), nn.SiLU(), nn.Conv3d(w, _PATCH, 1))
        self.refine = nn.Sequential(_CausalConv3d(3, 32, time_kernel=1), nn.SiLU(), _CausalConv3d(32, 3, time_kernel=1))

    def forward(self, z):  # (N, 16, 1 + k, h, w) -> (N, 3, 1 + 4k, 8h, 8w)
        x = _from_patches(self.head(self.blocks(self.embed(z))) + self.shortcut(z))
        return x + self.refine(x)


class CausalVideoAutoencoder(VideoAutoencoder):
    """Small causal video VAE with CogVideoX's layout (16 channels, 8x space, 4x time after frame 0).

    Encoder: conv -> 3 levels (each halves space; the first two also halve time) -> residual block -> norm ->
    conv to 2 x 16 moments. Decoder mirrors it. Everything is causal in time.
    """

    def __init__(self, config: CausalVAEConfig = CausalVAEConfig(), generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        self.scaling_factor = config.scaling_factor
        c, g = config.channels, config.norm_groups
        if config.architecture == "patch":
            self.encoder, self.decoder = _PatchEncoder(config), _PatchDecoder(config)
            self.reset_parameters(generator or torch.Generator().manual_seed(0))
            return
        times = (True, True, False)  # levels 0 and 1 halve time: 1 + 4k -> 1 + 2k -> 1 + k (as CogVideoX)
        self.encoder = nn.Sequential(
            _CausalConv3d(3, c[0]),
            *[_Level(c[max(i - 1, 0)], c[i], config, down=True, time=times[i]) for i in range(3)],
            _ResBlock(c[2], c[2], g), _FrameGroupNorm(g, c[2]), nn.SiLU(), _CausalConv3d(c[2], 2 * LATENT_CHANNELS))
        self.decoder = nn.Sequential(
            _CausalConv3d(LATENT_CHANNELS, c[2]), _ResBlock(c[2], c[2], g),
            *[_Level(c[min(i + 1, 2)], c[i], config, down=False, time=times[i]) for i in (2, 1, 0)],
            _FrameGroupNorm(g, c[0]), nn.SiLU(), _CausalConv3d(c[0], 3))
        self.reset_parameters(generator or torch.Generator().manual_seed(0))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Xavier-uniform convolution weights drawn from ``generator``, zero biases, unit norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d) and not m.weight.is_meta:
                nn.init.xavier_uniform_(m.weight, generator=generator)
                nn.init.zeros_(m.bias)
        if self.config.architecture == "patch" and not self.decoder.refine[-1].conv.weight.is_meta:
            nn.init.zeros_(self.decoder.refine[-1].conv.weight)   # the refinement starts as the identity
            # posterior log-variance starts at -8 (std 0.02): with the tiny KL weight only the slow reconstruction
            # gradient would pull it down from 0, i.e. unit-variance noise on the latents early in training
            nn.init.constant_(self.encoder.head[-1].bias[LATENT_CHANNELS:], -8.0)

    @torch.no_grad()
    def init_patch_pca(self, video: torch.Tensor) -> None:
        """``architecture="patch"``: set both shortcuts to the whitened principal components of the patches of
        ``video`` ``(B, V, F, 3, H, W)`` in [0, 1], and zero the non-linear branches' outputs, so training starts
        from the best linear autoencoder (PCA of 4 x 8 x 8 x 3 patches: ~27 dB on our synthetic heads at 64 px,
        where the randomly initialised network sits near 12 dB and needs thousands of steps) and only learns
        what improves on it. Each latent channel starts with unit variance (whitened)."""
        if self.config.architecture != "patch":
            raise Morph4DError("init_patch_pca needs architecture='patch'")
        p = _to_patches(to_vae_layout(video * 2 - 1).to(self._param))             # (N, 768, L, h, w)
        p = p.movedim(1, -1).reshape(-1, _PATCH).double()
        mean = p.mean(0)
        _, S, Vh = torch.linalg.svd(p - mean, full_matrices=False)
        comps, std = Vh[:LATENT_CHANNELS], (S[:LATENT_CHANNELS] / math.sqrt(len(p))).clamp(min=1e-6)
        enc, dec = self.encoder, self.decoder
        enc.shortcut.weight.copy_((comps / std[:, None])[..., None, None, None])
        enc.shortcut.bias.copy_(-(comps @ mean) / std)
        dec.shortcut.weight.copy_((comps.T * std)[..., None, None, None])
        dec.shortcut.bias.copy_(mean)
        nn.init.zeros_(enc.head[-1].weight[:LATENT_CHANNELS])
        nn.init.zeros_(enc.head[-1].bias[:LATENT_CHANNELS])
        nn.init.zeros_(dec.head[-1].weight)
        nn.init.zeros_(dec.head[-1].bias)

    def _moments(self, x):
        return self.encoder(x).chunk(2, dim=1)

    def _decode(self, z):
        return self.decoder(z)

    # -- weights: config.json + model.safetensors ---------------------------------------------------------
    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> None:
        """``config.json`` + ``model.safetensors``; ``dtype`` stores the weights at that precision."""
        save_weights(path, "CausalVideoAutoencoder", asdict(self.config), self.state_dict(), dtype)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "CausalVideoAutoencoder":
        path = Path(path)
        raw, state = load_weights(path, "CausalVideoAutoencoder", {f.name for f in fields(CausalVAEConfig)})
        config = config_from_json(CausalVAEConfig, raw, str(path / CONFIG_NAME))
        with torch.device("meta"):
            model = cls(config)
        load_state_strict(model, {k: v.to(device) for k, v in state.items()}, f"weights in {path / WEIGHTS_NAME}")
        return model.eval()


def latent_shape(batch: int, views: int, frames: int, height: int, width: int) -> tuple[int, ...]:
    """Latent shape of a ``(batch, views, frames, 3, height, width)`` video: ``(B, V, 1 + k, 16, H/8, W/8)``."""
    return (batch, views, latent_frames(frames), LATENT_CHANNELS, height // LATENT_FACTOR, width // LATENT_FACTOR)
