"""Frame-dependent UV-space deformation of a bound Gaussian avatar (MVP4D S2.4, after CAP4D).

CAP4D predicts expression-dependent per-Gaussian deformations with a U-Net on the FLAME UV map; MVP4D
overfits the avatar to one generated sequence, so it drops the expression map and conditions the U-Net on
an 8-channel sinusoidal embedding of the frame index instead, keeping CAP4D's spatial (UV) positional
encoding. The U-Net therefore outputs a time-dependent UV deformation map per frame index.

UV convention (written once here): a square map ``(..., C, S, S)`` covers ``[0, 1]^2``; ``u`` runs along
the columns (left -> right) and ``v`` along the rows (top -> bottom), so texel (row i, col j) has its
centre at ``(u, v) = ((j + 0.5) / S, (i + 0.5) / S)``. This is the layout ``mesh.raster`` produces when
a mesh is rasterized with ``(u * S, v * S)`` as screen coordinates.

Each Gaussian reads the map at one UV: the UV centroid of the triangle it is bound to (GaussianAvatars
binds Gaussians to triangles, so the deformation of a Gaussian is the deformation at its triangle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from morph4d.errors import Morph4DError


def frame_embedding(frame_index: torch.Tensor, num_frames: int, channels: int = 8) -> torch.Tensor:
    """MVP4D S2.4's sinusoidal temporal embedding of frame indices, ``(F,)`` -> ``(F, channels)``.

    The index is normalised to ``t = f / max(num_frames - 1, 1)`` in [0, 1]; channel pairs are
    ``(sin(pi 2^k t), cos(pi 2^k t))`` for ``k = 0 .. channels/2 - 1`` (for 8 channels: angular
    frequencies pi, 2 pi, 4 pi, 8 pi). The lowest pair's cosine is monotone on [0, 1], so distinct
    frames always get distinct embeddings; values lie in [-1, 1].
    """
    if channels <= 0 or channels % 2:
        raise ValueError(f"channels must be a positive even number, got {channels}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not isinstance(frame_index, torch.Tensor) or frame_index.dim() != 1:
        raise ValueError("frame_index must be a (F,) tensor of frame indices")
    t = frame_index.to(torch.float32) / max(num_frames - 1, 1)  # (F,)
    freqs = math.pi * 2.0 ** torch.arange(channels // 2, dtype=torch.float32, device=t.device)
    angles = t[:, None] * freqs  # (F, channels/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (F, channels): sin, cos interleaved


def uv_positional_encoding(size: int, num_frequencies: int = 4) -> torch.Tensor:
    """CAP4D-style UV positional encoding map ``(2 + 4 L, size, size)``, L = ``num_frequencies``.

    At each texel centre ``(u, v)`` (module docstring): the coordinates mapped to [-1, 1]
    (``2u - 1, 2v - 1``), then ``sin(pi 2^k u), cos(pi 2^k u), sin(pi 2^k v), cos(pi 2^k v)`` for
    ``k = 0 .. L - 1`` (CAP4D encodes its pose-map coordinates the same way, at frequencies 2^0..2^6;
    4 frequencies resolve a 128-px map's features down to ~1/16 of the map).
    """
    if size < 1 or num_frequencies < 0:
        raise ValueError(f"need size >= 1 and num_frequencies >= 0, got {size}, {num_frequencies}")
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # texel centres in (0, 1)
    v, u = torch.meshgrid(c, c, indexing="ij")  # (S, S): v along rows, u along columns
    channels = [2 * u - 1, 2 * v - 1]
    for k in range(num_frequencies):
        w = math.pi * 2.0 ** k
        channels += [torch.sin(w * u), torch.cos(w * u), torch.sin(w * v), torch.cos(w * v)]
    return torch.stack(channels)  # (2 + 4L, S, S)


@dataclass(frozen=True)
class DeformationUNetConfig:
    """Hyperparameters of ``DeformationUNet``.

    size: side of the square UV map (power of two, divisible by 2^depth); CAP4D uses 128
    base_channels: channels after the first down-sampling; doubled per level up to ``max_channels``
    depth: number of stride-2 down-sampling levels (the bottleneck is size / 2^depth pixels wide)
    frame_channels: width of the frame embedding (MVP4D S2.4: 8)
    uv_frequencies: frequencies of the UV positional encoding
    out_channels: per-texel output; 3 = a position offset (metres, world frame)
    """

    size: int = 128
    base_channels: int = 32
    max_channels: int = 256
    depth: int = 5
    frame_channels: int = 8
    uv_frequencies: int = 4
    out_channels: int = 3

    @classmethod
    def tiny(cls) -> "DeformationUNetConfig":
        """A 16-px, 2-level net for tests."""
        return cls(size=16, base_channels=8, max_channels=16, depth=2)

    @classmethod
    def default(cls) -> "DeformationUNetConfig":
        """CAP4D's 128x128 UV map."""
        return cls()

    @property
    def in_channels(self) -> int:
        return 2 + 4 * self.uv_frequencies + self.frame_channels


class DeformationUNet(nn.Module):
    """pix2pix-style U-Net (Isola et al. 2017, as CAP4D): UV encoding + frame embedding -> UV deformation.

    Encoder: ``depth`` blocks of Conv 4x4 stride 2 -> GroupNorm (not on the first/innermost block, as
    pix2pix) -> LeakyReLU(0.2). Decoder: ConvTranspose 4x4 stride 2 -> GroupNorm -> ReLU, concatenating
    the mirrored encoder features (skip connections). A final 3x3 conv over [decoder output, input] maps
    to ``out_channels``; it is zero-initialised, so a fresh net outputs exactly zero and the avatar
    starts as the mesh-bound one. Other weights: N(0, 0.02) as pix2pix, drawn from ``generator``.
    """

    def __init__(self, config: DeformationUNetConfig, *, generator: torch.Generator):
        super().__init__()
        if config.size % (2 ** config.depth) or config.depth < 1:
            raise Morph4DError(f"size {config.size} must be divisible by 2^depth = {2 ** config.depth} (depth >= 1)")
        self.config = config
        self.register_buffer("uv_encoding", uv_positional_encoding(config.size, config.uv_frequencies),
                             persistent=False)
        widths = [min(config.base_channels * 2 ** i, config.max_channels) for i in range(config.depth)]
        self.down = nn.ModuleList()
        cin = config.in_channels
        for i, w in enumerate(widths):
            norm = 0 < i < config.depth - 1
            self.down.append(nn.Sequential(nn.Conv2d(cin, w, 4, 2, 1, bias=not norm),
                                           _group_norm(w) if norm else nn.Identity(), nn.LeakyReLU(0.2)))
            cin = w
        self.up = nn.ModuleList()
        for i in reversed(range(config.depth)):
            # Level i of the decoder sees its input concatenated with encoder level i's output (except
            # the innermost, whose input is that output) and produces encoder level i-1's width.
            cin = widths[i] if i == config.depth - 1 else 2 * widths[i]
            w = widths[i - 1] if i > 0 else config.base_channels
            self.up.append(nn.Sequential(nn.ConvTranspose2d(cin, w, 4, 2, 1, bias=False), _group_norm(w),
                                         nn.ReLU()))
        self.out = nn.Conv2d(config.base_channels + config.in_channels, config.out_channels, 3, padding=1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out.weight)  # zero output layer: deformation 0 at init (mesh-bound avatar)

    def forward(self, frame_index: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Deformation maps ``(F, out_channels, S, S)`` for frame indices ``(F,)`` of a ``num_frames`` sequence."""
        S = self.config.size
        emb = frame_embedding(frame_index, num_frames, self.config.frame_channels).to(self.uv_encoding)
        Fn = emb.shape[0]
        x = torch.cat([self.uv_encoding.expand(Fn, -1, -1, -1),
                       emb[:, :, None, None].expand(-1, -1, S, S)], dim=1)  # (F, C_in, S, S)
        skips, h = [], x
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = self.up[0](skips.pop())
        for block in self.up[1:]:
            h = block(torch.cat([h, skips.pop()], dim=1))
        return self.out(torch.cat([h, x], dim=1))  # (F, out_channels, S, S)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def sample_uv(uv_map: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of ``uv_map (F, C, S, S)`` at ``uv (G, 2)`` in [0, 1] -> ``(F, G, C)``.

    ``u`` indexes columns and ``v`` rows (module docstring); ``grid_sample`` with ``align_corners=False``
    puts texel centres at ``(j + 0.5) / S``, and ``padding_mode="border"`` clamps lookups near the edges.
    """
    if not isinstance(uv_map, torch.Tensor) or uv_map.dim() != 4:
        raise ValueError("uv_map must be a (F, C, S, S) tensor")
    if not isinstance(uv, torch.Tensor) or uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError("uv must be a (G, 2) tensor of (u, v) coordinates")
    Fn, G = uv_map.shape[0], uv.shape[0]
    grid = (2 * uv.to(uv_map) - 1).expand(Fn, 1, G, 2)  # (F, 1, G, 2): x = u (columns), y = v (rows)
    out = F.grid_sample(uv_map, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # contiguous: the per-Gaussian arithmetic downstream runs ~2x slower on the strided (transposed) view
    return out[:, :, 0].transpose(1, 2).contiguous()  # (F, G, C)


def gaussian_uvs(model, bound) -> torch.Tensor:
    """Each Gaussian's UV ``(G, 2)``: the UV centroid of its bound triangle, ``model.uvs[model.uv_faces[binding]]``.

    model: a ``HeadModel`` with ``uvs (M, 2)`` and ``uv_faces (T, 3)``; bound: ``BoundGaussians``
    """
    if getattr(model, "uvs", None) is None or getattr(model, "uv_faces", None) is None:
        raise Morph4DError("the head model has no UVs (uvs and uv_faces are needed for the UV deformation)")
    if len(bound) and int(bound.binding.max()) >= model.uv_faces.shape[0]:
        raise Morph4DError(f"binding indexes triangle {int(bound.binding.max())} but the model has "
                           f"{model.uv_faces.shape[0]} UV faces")
    return model.uvs[model.uv_faces[bound.binding]].mean(dim=1)
