"""IM-Portrait's space-time U-Net (IM-Portrait §3, supplement "Network Architecture"; REFERENCE.md §2): a
pixel-space video diffusion network whose output is a multiplane image per frame.

From the supplement (sizes at its 512 px input; ours scale with ``sample_size``, the levels at 1/8, 1/16, 1/32):

* a stem: a convolution to 1/4 of the input size, another to 1/8;
* a **colour branch** with 2 conv-inflation blocks at 1/8, 3 at 1/16 and 3 at 1/32 (Lumiere's space-time
  U-Net: each block a 2D ResNet block then a temporal 1D convolution); spatial and temporal self-attention in
  the 1/32 blocks; cross-attention to the reference portrait's features in every 1/16 block;
* a **geometry branch** with one conv-inflation block per resolution and no reference input: it receives the
  colour branch's features (and so the reference's) through zero-initialised 1x1 convolutions at every level;
* outputs by pixel shuffle: colour 1/8 -> 1/4 (conv) -> 1/1 (conv), the frontal and the residual RGB images;
  geometry 1/8 -> 1/4 -> 1/2 -> 1/1 (a conv after each), the alpha of every MPI plane.

Ours, where the supplement is silent: the U-Net's decoder mirrors the encoder (same block counts, skip
concatenation), the geometry branch likewise; widths per level are the config's ``channels``; the temporal
convolutions and the temporal attention's output projections start at zero (Lumiere's inflation: the network
starts as a per-frame image model); the reference encoder is a stem plus one ResNet block per level down to
1/16 (its tokens are the cross-attention's keys); outputs pass a sigmoid (colours and alphas in [0, 1], what the
MPI renderer composites); the network predicts the MPI itself (x0 of the frontal video is its render).

Inputs (B batch, F frames, H = W = ``sample_size``), images in [-1, 1]: the noisy frontal video (3 channels),
the first-frame slot (the first frame's image, 3, and a flag plane, 1: 1 where the slot is filled) and the
target's UV-coordinate map (``conditioning.uvmaps``, 3) per frame; the reference portrait with its own UV map
(6 channels, colour branch only; zeros = no reference, for guidance); the diffusion timestep.

**Our extensions** (config switches, off in the ``paper`` preset, on in ``tiny`` / ``small``), for a network
small enough to train on a CPU, whose 1/8 stem leaves 8 x 8 features at 64 px and whose 1/16 cross-attention
sees the reference as 4 x 4 tokens (measured: ``scripts/portrait_noise_levels.py``; the first default drew a
blurred head that did not resemble its reference):

* ``projection``: 4 more channels per frame, the reference portrait projected through the head mesh into the
  MPI camera with the frame's expression and pose (3, in [-1, 1]) and its confidence (1, in [0, 1])
  (``conditioning.projection.project_with_confidence``: the geometry prior GEN3C / ViewCrafter condition on, and
  MVP4D's reference-projection baseline). They belong to the reference: emptied with it (dropout, guidance).
* ``detail``: a full-resolution path from the frame inputs (two 3x3 convolutions of that width) concatenated
  with each output head's last features, so the heads can keep the input's pixels (the projection's texture, the
  first frame, the noisy frame at small noise) that the 1/8 U-Net cannot carry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from morph4d.errors import Morph4DError
from morph4d.io import config_from_json, load_state_strict, load_weights, save_weights

FRAME_CHANNELS = 3 + 3 + 1 + 3   # noisy frame, first-frame image, first-frame flag, UV map
PROJECTION_CHANNELS = 3 + 1      # ours (module doc): the reference projection and its confidence
REFERENCE_CHANNELS = 3 + 3       # portrait, its UV map


@dataclass(frozen=True)
class PortraitUNetConfig:
    """Architecture; ``asdict`` of it is ``config.json``. Defaults = the supplement's network at the ``small``
    preset's sizes; the preset itself adds our ``projection`` and ``detail`` (module doc)."""
    sample_size: int = 64                          # frame side in pixels (multiple of 32)
    planes: int = 16                               # MPI planes the geometry branch predicts
    channels: tuple[int, int, int] = (64, 96, 128)  # widths at 1/8, 1/16, 1/32 of the frame
    color_blocks: tuple[int, int, int] = (2, 3, 3)  # supplement
    geometry_blocks: tuple[int, int, int] = (1, 1, 1)  # supplement
    attention_head_dim: int = 32
    time_embed_dim: int = 256
    norm_groups: int = 16
    projection: bool = False                       # ours: reference-projection channels per frame (module doc)
    detail: int = 0                                # ours: width of the full-resolution path to the heads; 0: none

    @property
    def frame_channels(self) -> int:
        return FRAME_CHANNELS + PROJECTION_CHANNELS * self.projection

    def __post_init__(self):
        if self.sample_size % 32 or self.sample_size < 32:
            raise Morph4DError(f"sample_size must be a multiple of 32, got {self.sample_size}")
        if self.planes < 2 or self.detail < 0 or len(self.channels) != 3 or len(self.color_blocks) != 3 or len(self.geometry_blocks) != 3:
            raise Morph4DError(f"invalid IM-Portrait U-Net config: {self}")
        if any(c % self.norm_groups or c % self.attention_head_dim for c in self.channels) \
                or self.channels[0] % (2 * self.norm_groups):
            raise Morph4DError(f"channels {self.channels} must be multiples of norm_groups ({self.norm_groups}) "
                               f"and attention_head_dim ({self.attention_head_dim}); the first of 2 x norm_groups")

    @classmethod
    def preset(cls, name: str, **overrides) -> "PortraitUNetConfig":
        if name not in UNET_PRESETS:
            raise Morph4DError(f"unknown IM-Portrait U-Net preset {name!r}; expected one of {sorted(UNET_PRESETS)}")
        return replace(UNET_PRESETS[name], **overrides)


UNET_PRESETS = {
    "tiny": PortraitUNetConfig(sample_size=32, planes=4, channels=(16, 16, 32), color_blocks=(1, 1, 1),
                               attention_head_dim=8, time_embed_dim=32, norm_groups=4, projection=True, detail=8),
    "small": PortraitUNetConfig(projection=True, detail=32),
    # ours at the supplement's sizes (512 px; block counts as published, widths chosen like Lumiere's/SD's)
    "paper": PortraitUNetConfig(sample_size=512, planes=32, channels=(256, 512, 1024), attention_head_dim=64,
                                time_embed_dim=1024, norm_groups=32),
}


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class InflationBlock(nn.Module):
    """Lumiere's conv-inflation block: a 2D ResNet block per frame, then a temporal convolution (zero-initialised,
    residual) along the frames of every pixel. Tensors (B, F, C, H, W)."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int):
        super().__init__()
        self.spatial = ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb, groups=groups)
        self.temporal = _zero(nn.Conv1d(cout, cout, 3, padding=1))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        B, Fr = x.shape[:2]
        y = self.spatial(x.flatten(0, 1), temb.repeat_interleave(Fr, 0)).unflatten(0, (B, Fr))
        C, H, W = y.shape[2:]
        seq = y.permute(0, 3, 4, 2, 1).reshape(B * H * W, C, Fr)             # per pixel, along frames
        seq = seq + self.temporal(seq)
        return seq.reshape(B, H, W, C, Fr).permute(0, 4, 3, 1, 2)


class SpaceTimeAttention(nn.Module):
    """Spatial self-attention over each frame's pixels, then temporal self-attention over each pixel's frames
    (its output projection zero-initialised); both residual, pre-normed."""

    def __init__(self, c: int, head_dim: int, groups: int):
        super().__init__()
        self.norm_s, self.norm_t = nn.GroupNorm(groups, c), nn.GroupNorm(groups, c)
        self.spatial = Attention(c, heads=c // head_dim, dim_head=head_dim, bias=True)
        self.temporal = Attention(c, heads=c // head_dim, dim_head=head_dim, bias=True)
        _zero(self.temporal.to_out[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, Fr, C, H, W = x.shape
        s = self.norm_s(x.flatten(0, 1)).flatten(2).transpose(1, 2)           # (B F, H W, C)
        x = x + self.spatial(s).transpose(1, 2).reshape(B, Fr, C, H, W)
        t = self.norm_t(x.flatten(0, 1)).reshape(B, Fr, C, H * W).permute(0, 3, 1, 2).reshape(B * H * W, Fr, C)
        t = self.temporal(t).reshape(B, H * W, Fr, C).permute(0, 2, 3, 1).reshape(B, Fr, C, H, W)
        return x + t


class ReferenceAttention(nn.Module):
    """Cross-attention from every frame's pixels to the reference portrait's tokens (residual, pre-normed)."""

    def __init__(self, c: int, ref_dim: int, head_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.attn = Attention(c, cross_attention_dim=ref_dim, heads=c // head_dim, dim_head=head_dim, bias=True)

    def forward(self, x: torch.Tensor, ref_tokens: torch.Tensor) -> torch.Tensor:
        B, Fr, C, H, W = x.shape
        q = self.norm(x.flatten(0, 1)).flatten(2).transpose(1, 2)            # (B F, H W, C)
        kv = ref_tokens.repeat_interleave(Fr, 0)
        return x + self.attn(q, encoder_hidden_states=kv).transpose(1, 2).reshape(B, Fr, C, H, W)


class Level(nn.Module):
    """The blocks of one resolution of one branch (encoder or decoder side)."""

    def __init__(self, cin: int, c: int, n: int, temb: int, cfg: PortraitUNetConfig, attention: bool,
                 ref_dim: int | None):
        super().__init__()
        self.blocks = nn.ModuleList(InflationBlock(cin if i == 0 else c, c, temb, cfg.norm_groups) for i in range(n))
        self.attn = nn.ModuleList(SpaceTimeAttention(c, cfg.attention_head_dim, cfg.norm_groups) for _ in range(n)) \
            if attention else None
        self.cross = nn.ModuleList(ReferenceAttention(c, ref_dim, cfg.attention_head_dim, cfg.norm_groups)
                                   for _ in range(n)) if ref_dim is not None else None

    def forward(self, x, temb, ref_tokens=None):
        for i, block in enumerate(self.blocks):
            x = block(x, temb)
            if self.attn is not None:
                x = self.attn[i](x)
            if self.cross is not None:
                x = self.cross[i](x, ref_tokens)
        return x


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def _stem(cin: int, c: int) -> nn.Sequential:
    """The supplement's two convolutions: to 1/4 of the frame, then to 1/8."""
    return nn.Sequential(nn.Conv2d(cin, c // 2, 4, stride=4), nn.SiLU(), nn.Conv2d(c // 2, c, 3, stride=2, padding=1))


class ShuffleHead(nn.Module):
    """Pixel-shuffle upsampling: each (factor, width) step = conv to width x factor^2, shuffle, SiLU; then ``out``,
    a conv to ``cout``. With ``detail`` > 0 (ours, module doc), the frame inputs pass two full-resolution convs of
    that width and join the last features before ``out`` (conv, SiLU, conv)."""

    def __init__(self, cin: int, steps: list[tuple[int, int]], cout: int, groups: int, frame_channels: int,
                 detail: int):
        super().__init__()
        layers: list[nn.Module] = [nn.GroupNorm(groups, cin), nn.SiLU()]
        c = cin
        for factor, width in steps:
            layers += [nn.Conv2d(c, width * factor * factor, 3, padding=1), nn.PixelShuffle(factor), nn.SiLU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.detail = nn.Sequential(nn.Conv2d(frame_channels, detail, 3, padding=1), nn.SiLU(),
                                    nn.Conv2d(detail, detail, 3, padding=1), nn.SiLU()) if detail else None
        self.out = nn.Sequential(nn.Conv2d(c + detail, detail, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(detail, cout, 3, padding=1)) if detail else nn.Conv2d(c, cout, 3, padding=1)

    def forward(self, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``x`` (B F, cin, h, w) features at 1/8, ``frames`` (B F, frame_channels, H, W) -> (B F, cout, H, W)."""
        h = self.body(x)
        if self.detail is not None:
            h = torch.cat([h, self.detail(frames)], 1)
        return self.out(h)


class Branch(nn.Module):
    """One U-Net (colour or geometry): stem, encoder levels with downsampling, decoder levels with upsampling
    and skip concatenation."""

    def __init__(self, cfg: PortraitUNetConfig, blocks: tuple[int, int, int], temb: int, reference: bool):
        super().__init__()
        c = cfg.channels
        ref = c[1] if reference else None
        self.stem = _stem(cfg.frame_channels, c[0])
        self.down = nn.ModuleList([Level(c[0], c[0], blocks[0], temb, cfg, False, None),
                                   Level(c[0], c[1], blocks[1], temb, cfg, False, ref),
                                   Level(c[1], c[2], blocks[2], temb, cfg, True, None)])
        self.downsample = nn.ModuleList([nn.Conv2d(c[0], c[0], 3, stride=2, padding=1),
                                         nn.Conv2d(c[1], c[1], 3, stride=2, padding=1)])
        self.upsample = nn.ModuleList([nn.Conv2d(c[2], c[2], 3, padding=1), nn.Conv2d(c[1], c[1], 3, padding=1)])
        self.up = nn.ModuleList([Level(c[2] + c[1], c[1], blocks[1], temb, cfg, False, ref),
                                 Level(c[1] + c[0], c[0], blocks[0], temb, cfg, False, None)])

    def forward(self, x, temb, ref_tokens=None, links=None, link_convs=None):
        """``links`` (the colour branch's features, 5 levels) are added through ``link_convs`` (zero 1x1 convs)
        after each level. Returns the 1/8 features and the 5 levels' outputs."""
        outs = []

        def linked(i, h):
            if links is not None:
                h = h + _per_frame(link_convs[i], links[i])
            outs.append(h)
            return h
        h0 = linked(0, self.down[0](_per_frame(self.stem, x), temb))
        h1 = linked(1, self.down[1](_per_frame(self.downsample[0], h0), temb, ref_tokens))
        h2 = linked(2, self.down[2](_per_frame(self.downsample[1], h1), temb))
        u = _per_frame(self.upsample[0], F.interpolate(h2.flatten(0, 1), scale_factor=2.0, mode="nearest")
                       .unflatten(0, h2.shape[:2]))
        u1 = linked(3, self.up[0](torch.cat([u, h1], 2), temb, ref_tokens))
        u = _per_frame(self.upsample[1], F.interpolate(u1.flatten(0, 1), scale_factor=2.0, mode="nearest")
                       .unflatten(0, u1.shape[:2]))
        u0 = linked(4, self.up[1](torch.cat([u, h0], 2), temb))
        return u0, outs


class PortraitUNet(nn.Module):
    """The network (module doc). ``forward`` -> {"front", "residual": (B, F, 3, H, W), "alpha": (B, F, P, 1, H, W)},
    all in [0, 1]."""

    def __init__(self, config: PortraitUNetConfig = PortraitUNetConfig(), generator: torch.Generator | None = None):
        super().__init__()
        self.config = cfg = config
        c, temb = cfg.channels, cfg.time_embed_dim
        self.time_proj = Timesteps(c[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(c[0], temb)
        self.ref_stem = _stem(REFERENCE_CHANNELS, c[0])
        self.ref_blocks = nn.ModuleList([ResnetBlock2D(in_channels=c[0], out_channels=c[0], temb_channels=None,
                                                       groups=cfg.norm_groups),
                                         nn.Conv2d(c[0], c[1], 3, stride=2, padding=1),
                                         ResnetBlock2D(in_channels=c[1], out_channels=c[1], temb_channels=None,
                                                       groups=cfg.norm_groups)])
        self.color = Branch(cfg, cfg.color_blocks, temb, reference=True)
        self.geometry = Branch(cfg, cfg.geometry_blocks, temb, reference=False)
        widths = (c[0], c[1], c[2], c[1], c[0])
        self.links = nn.ModuleList(_zero(nn.Conv2d(w, w, 1)) for w in widths)
        fc, d = cfg.frame_channels, cfg.detail
        self.color_head = ShuffleHead(c[0], [(2, c[0] // 2), (4, 16)], 6, cfg.norm_groups, fc, d)
        self.geometry_head = ShuffleHead(c[0], [(2, c[0] // 2), (2, c[0] // 2), (2, c[0] // 2)], cfg.planes,
                                         cfg.norm_groups, fc, d)
        if generator is not None:
            self._seeded_init(generator)

    def _seeded_init(self, g: torch.Generator) -> None:
        """Re-draw every parameter from ``g`` (PyTorch's default distributions: uniform +-1/sqrt(fan_in) for
        weights and biases; norms at 1 / 0; the zero-initialised links and temporal layers stay zero), so a seed
        gives the same network on every machine."""
        zero = {id(p) for m in (*self.links, *[b.temporal for b in self.modules() if isinstance(b, InflationBlock)],
                                *[a.temporal.to_out[0] for a in self.modules() if isinstance(a, SpaceTimeAttention)])
                for p in m.parameters()}
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.GroupNorm):
                    continue
                weight = getattr(module, "weight", None)
                if not isinstance(weight, nn.Parameter) or id(weight) in zero or weight.dim() < 2:
                    continue
                bound = 1.0 / weight[0].numel() ** 0.5
                weight.copy_(torch.rand(weight.shape, generator=g) * 2 * bound - bound)
                bias = getattr(module, "bias", None)
                if isinstance(bias, nn.Parameter):
                    bias.copy_(torch.rand(bias.shape, generator=g) * 2 * bound - bound)

    def reference_tokens(self, reference: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W) portrait + UV map in [-1, 1] -> (B, (H/16)^2, c1) tokens."""
        h = self.ref_stem(reference)
        h = self.ref_blocks[0](h, None)
        h = self.ref_blocks[2](self.ref_blocks[1](h), None)
        return h.flatten(2).transpose(1, 2)

    def forward(self, frames: torch.Tensor, timestep: torch.Tensor, reference: torch.Tensor) -> dict:
        """``frames`` (B, F, 10 [+ 4], H, W): noisy frame, first-frame image, flag, UV map [, reference projection
        and confidence] (module doc); ``timestep`` (B,); ``reference`` (B, 6, H, W)."""
        B, Fr, C, H, W = frames.shape
        fc, S = self.config.frame_channels, self.config.sample_size
        if C != fc or H != S or W != H or reference.shape != (B, 6, H, W):
            raise Morph4DError(f"IM-Portrait U-Net of {S} px expects frames (B, F, {fc}, {S}, {S}) and a "
                               f"reference (B, 6, H, W), got {tuple(frames.shape)} and {tuple(reference.shape)}")
        temb = self.time_embed(self.time_proj(timestep.reshape(B)).to(frames.dtype))
        ref_tokens = self.reference_tokens(reference)
        color, links = self.color(frames, temb, ref_tokens)
        geometry, _ = self.geometry(frames, temb, links=links, link_convs=self.links)
        flat = frames.flatten(0, 1)
        rgb = self.color_head(color.flatten(0, 1), flat).unflatten(0, (B, Fr))
        alpha = self.geometry_head(geometry.flatten(0, 1), flat).unflatten(0, (B, Fr))
        return {"front": torch.sigmoid(rgb[:, :, :3]), "residual": torch.sigmoid(rgb[:, :, 3:]),
                "alpha": torch.sigmoid(alpha)[:, :, :, None]}

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> None:
        save_weights(path, "PortraitUNet", asdict(self.config), self.state_dict(), dtype)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "PortraitUNet":
        raw, state = load_weights(path, "PortraitUNet", {f.name for f in fields(PortraitUNetConfig)})
        config = config_from_json(PortraitUNetConfig, raw, str(Path(path) / "config.json"))
        model = cls(config)
        load_state_strict(model, state, f"weights in {path}")
        return model.to(device)


__all__ = ["FRAME_CHANNELS", "PROJECTION_CHANNELS", "REFERENCE_CHANNELS", "PortraitUNetConfig", "UNET_PRESETS",
           "ShuffleHead", "PortraitUNet"]
