"""MVP4D conditioning signals: the per-image maps the MMVDM is conditioned on (MVP4D §3.2, S2.1, Fig. S9;
CAP4D's maps plus MVP4D's camera-origin and sub-frame motion maps).

For every image (the reference and every kept frame of every generated view), at latent resolution
``(H/8, W/8)``, channels in the order of ``ConditioningLayout``:

- ``pose``: rasterized canonical (template) coordinates of the head surface, normalised to [-1, 1]
  (centred on the template's bounding box, divided by its largest half-extent), fed either raw (3
  channels) or as ``sin(2^k pi c), cos(2^k pi c)`` for k < ``pose_frequencies`` (6 * frequencies
  channels; CAP4D uses 7 -> 42). Zero off the head. Default: sin/cos with 7 frequencies, as CAP4D,
  whose maps MVP4D adopts (S2.1) — a raw coordinate changes by ~1/32 per latent pixel and would give
  the patch embedding little to separate neighbouring surface points by.
- ``expression``: rasterized offset of the expressed mesh from the neutral mesh of the same identity,
  both before the global head transform (``HeadModel.forward(apply_global=False)`` - ``neutral``; jaw and
  eye rotations count as expression), divided by ``expression_scale`` (CAP4D's 0.0104 m). Zero off the head.
- ``ray_direction`` / ``ray_origin``: unit ray direction through every pixel centre and the camera
  centre, both in the first reference camera's frame (OpenCV axes; origin in metres). Full image.
- ``reference_mask``: b, 1 where the latent is given (reference image, given views/frames), else 0.
- ``outcrop_mask``: 1 where the crop lies outside the original photo (CAP4D/MVP4D S2.1), else 0.
- ``motion``: three 2-channel maps per kept frame: the screen-space displacement ``p_j - p_k`` of the head
  surface from the kept frame k to each dropped frame j = k-3, k-2, k-1 of its group of 4, as fractions
  of the image width/height divided by ``motion_scale``; rasterized through the kept frame's raster,
  like the expression map. Zero for frame 0 and for the reference (MVP4D S2.1).

- ``projection`` (ours, issue 17; only with ``ConditioningConfig(reference_projection=True)``, off by default so
  that MVP4D's 59 channels stay as published): the reference image projected through the head mesh into the
  image's camera and frame (``conditioning.projection.projection_conditioning``), encoded by the video
  autoencoder like the images themselves (16 channels), and its confidence pooled to latent resolution (1). The
  maps leave these channels zero: whoever holds the autoencoder fills them (``fill_projection``).

Mesh maps are rasterized at ``supersample`` x the latent resolution (2x) and area-downsampled, so edges
are anti-aliased at 64x64 latents. Ray maps are evaluated exactly at the latent pixel centres.

Video frame counts must be 1 + 4k (the VAE keeps frame 0 and compresses each following group of 4);
kept frames are 0, 4, 8, ..., F - 1 (``morph4d.models.latent.kept_frames``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from morph4d.cameras import Cameras
from morph4d.conditioning.projection import PROJECTION_MAKES, PROJECTION_VERSION
from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel, HeadParams
from morph4d.mesh.raster import interpolate, rasterize
from morph4d.models.latent import LATENT_CHANNELS, LATENT_FACTOR, kept_frames


@dataclass(frozen=True)
class ConditioningConfig:
    pose_encoding: str = "sincos"     # "sincos" (CAP4D, default) or "raw"
    pose_frequencies: int = 7         # sin/cos frequencies 2^0 .. 2^(n-1) per coordinate (CAP4D: 7)
    expression_scale: float = 0.0104  # m; CAP4D's normaliser of expression offsets
    motion_scale: float = 0.02        # motion maps are displacements as a fraction of the image / this
    supersample: int = 2              # rasterize at this multiple of the latent resolution, then area-pool
    reference_projection: bool = False  # ours (issue 17): the encoded reference projection + confidence channels
    projection_version: int = PROJECTION_VERSION  # the make the data loader builds (projection.PROJECTION_MAKES)

    def __post_init__(self):
        if self.pose_encoding not in ("sincos", "raw"):
            raise Morph4DError(f"pose_encoding must be 'sincos' or 'raw', got {self.pose_encoding!r}")
        if self.pose_frequencies < 1 or self.supersample < 1:
            raise Morph4DError("pose_frequencies and supersample must be >= 1")
        if self.expression_scale <= 0 or self.motion_scale <= 0:
            raise Morph4DError("expression_scale and motion_scale must be > 0")
        if self.projection_version not in PROJECTION_MAKES:
            raise Morph4DError(f"projection_version must be one of {sorted(PROJECTION_MAKES)}, got "
                               f"{self.projection_version}")


@dataclass(frozen=True)
class ConditioningLayout:
    """Channel slices of a conditioning tensor; one layout shared by the model, loader and visualiser."""
    pose: slice
    expression: slice
    ray_direction: slice
    ray_origin: slice
    reference_mask: slice
    outcrop_mask: slice
    motion: slice
    projection: slice                 # empty unless ConditioningConfig.reference_projection (ours, last)
    num_channels: int

    GROUPS = ("pose", "expression", "ray_direction", "ray_origin", "reference_mask", "outcrop_mask", "motion",
              "projection")

    @classmethod
    def from_config(cls, cfg: ConditioningConfig = ConditioningConfig()) -> "ConditioningLayout":
        sizes = {"pose": 3 if cfg.pose_encoding == "raw" else 6 * cfg.pose_frequencies, "expression": 3,
                 "ray_direction": 3, "ray_origin": 3, "reference_mask": 1, "outcrop_mask": 1, "motion": 6,
                 "projection": (LATENT_CHANNELS + 1) * cfg.reference_projection}
        start, slices = 0, {}
        for name in cls.GROUPS:
            slices[name] = slice(start, start + sizes[name])
            start += sizes[name]
        return cls(num_channels=start, **slices)

    def groups(self) -> dict[str, slice]:
        """The layout's non-empty groups, in channel order."""
        return {name: s for name in self.GROUPS if (s := getattr(self, name)).stop > s.start}

    def describe(self) -> str:
        """``pose 0-41, expression 42-44, ... (59 channels)``: the layout in words, for error messages."""
        return ", ".join(f"{name} {s.start}-{s.stop - 1}" for name, s in self.groups().items()) + \
            f" ({self.num_channels} channels)"

    def channel_names(self) -> list[str]:
        """One name per channel, e.g. ``pose.sin0.x``, ``motion.2.v``."""
        names = []
        for group, s in self.groups().items():
            n = s.stop - s.start
            if group == "pose" and n > 3:
                names += [f"pose.{fn}{k}.{a}" for k in range(n // 6) for fn in ("sin", "cos") for a in "xyz"]
            elif group == "motion":
                names += [f"motion.{j}.{a}" for j in range(3) for a in "uv"]
            elif group == "projection":
                names += [f"projection.latent{k}" for k in range(n - 1)] + ["projection.confidence"]
            elif n == 3:
                names += [f"{group}.{a}" for a in "xyz"]
            else:
                names.append(group)
        return names


NUM_CONDITIONING_CHANNELS = ConditioningLayout.from_config().num_channels  # 59 with the default config


def layout_of(model_config, what: str = "the model") -> ConditioningLayout:
    """The conditioning layout an MMVDM's config (``models.mmvdm.MMVDMConfig``) was built for: MVP4D's maps, plus
    the reference projection where ``reference_projection`` (ours, issue 17). A config whose
    ``conditioning_channels`` fit neither is refused, naming both layouts."""
    layout = ConditioningLayout.from_config(ConditioningConfig(
        reference_projection=bool(getattr(model_config, "reference_projection", False))))
    if model_config.conditioning_channels != layout.num_channels:
        raise Morph4DError(f"{what} takes {model_config.conditioning_channels} conditioning channels, but the layout "
                           f"its config names has {layout.num_channels}: {layout.describe()}")
    return layout


class HeadConditioner:
    """Builds conditioning maps for one head model (canonical coordinates precomputed once)."""

    def __init__(self, model: HeadModel, cfg: ConditioningConfig = ConditioningConfig()):
        self.model, self.cfg = model, cfg
        self.layout = ConditioningLayout.from_config(cfg)
        t = model.template
        lo, hi = t.min(0).values, t.max(0).values
        self.canonical = (t - (lo + hi) / 2) / ((hi - lo).max() / 2)  # (N, 3) in [-1, 1]

    # -- per-vertex quantities -------------------------------------------------------------------------
    def vertices_and_offsets(self, params: HeadParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed vertices (..., N, 3) and expression offsets (..., N, 3) (before the global transform)."""
        posed = self.model(params)
        local = self.model(params, apply_global=False)
        return posed, local - self.model.neutral(params.shape)[..., :, :].expand_as(local)

    # -- image-level maps ------------------------------------------------------------------------------
    def maps(self, vertices: torch.Tensor, offsets: torch.Tensor, cameras: Cameras, reference: Cameras,
             given: torch.Tensor, outcrop: torch.Tensor | None = None,
             dropped: torch.Tensor | None = None, chunk: int = 16) -> torch.Tensor:
        """Conditioning ``(B, C, h, w)`` for B images.

        vertices, offsets: (B, N, 3) posed vertices and expression offsets of each image's frame
        cameras: B cameras of full-resolution images (H, W divisible by 8); reference: the first reference
            camera (its R, t define the ray frame)
        given: (B,) reference mask b per image; outcrop: (B, h, w) at latent resolution, or None (zeros)
        dropped: (B, 3, N, 3) posed vertices of the 3 dropped frames of each image's group, or None (zero
            motion: frame 0, the reference, single images)
        """
        B = len(cameras)
        H, W = cameras.height, cameras.width
        if H % LATENT_FACTOR or W % LATENT_FACTOR:
            raise Morph4DError(f"image size must be divisible by {LATENT_FACTOR}, got {W}x{H}")
        if vertices.shape != (B, self.model.num_vertices, 3) or offsets.shape != vertices.shape:
            raise Morph4DError(f"vertices and offsets must be (B={B}, N={self.model.num_vertices}, 3), got "
                               f"{tuple(vertices.shape)} and {tuple(offsets.shape)}")
        h, w = H // LATENT_FACTOR, W // LATENT_FACTOR
        out = torch.zeros(B, self.layout.num_channels, h, w)
        for s in range(0, B, chunk):  # chunks bound the memory of the per-pixel gathers
            sl = slice(s, min(B, s + chunk))
            mesh = self._mesh_maps(vertices[sl], offsets[sl], cameras[sl], None if dropped is None else dropped[sl])
            out[sl, : self.layout.ray_direction.start] = mesh[:, :-6]  # pose, expression
            out[sl, self.layout.motion] = mesh[:, -6:]
        out[:, self.layout.ray_direction], out[:, self.layout.ray_origin] = self.ray_maps(cameras, reference, h, w)
        out[:, self.layout.reference_mask] = given.to(out.dtype).view(B, 1, 1, 1)
        if outcrop is not None:
            if outcrop.shape != (B, h, w):
                raise Morph4DError(f"outcrop must be (B={B}, {h}, {w}) at latent resolution, got {tuple(outcrop.shape)}")
            out[:, self.layout.outcrop_mask] = outcrop[:, None].to(out.dtype)
        return out

    def _mesh_maps(self, vertices, offsets, cameras: Cameras, dropped) -> torch.Tensor:
        """Pose + expression (+ motion) maps at latent resolution: (b, pose + 3 + 6, h, w)."""
        b, N, _ = vertices.shape
        s = self.cfg.supersample
        H, W = cameras.height, cameras.width
        hs, ws = H // LATENT_FACTOR * s, W // LATENT_FACTOR * s
        cams = cameras.resized(ws, hs)
        raster = rasterize(vertices, self.model.faces, cams)
        motion = torch.zeros(b, N, 6)
        if dropped is not None:  # displacement kept -> dropped, in fractions of the image (MVP4D S2.1)
            here = cameras.project(vertices)[..., :2]  # (b, N, 2) full-resolution pixels
            there = cameras.project(dropped.reshape(b, 3 * N, 3))[..., :2].reshape(b, 3, N, 2)
            size = torch.tensor([W, H], dtype=here.dtype)
            motion = ((there - here[:, None]) / size / self.cfg.motion_scale).permute(0, 2, 1, 3).reshape(b, N, 6)
        attrs = torch.cat([self.canonical.expand(b, N, 3), offsets / self.cfg.expression_scale, motion], -1)
        pix = interpolate(attrs, self.model.faces, raster)  # (b, hs, ws, 12)
        coords = pix[..., :3]
        if self.cfg.pose_encoding == "sincos":
            freq = math.pi * 2.0 ** torch.arange(self.cfg.pose_frequencies, dtype=coords.dtype)
            ang = coords[..., None, :] * freq[:, None]  # (b, hs, ws, K, 3)
            pose = torch.stack([ang.sin(), ang.cos()], dim=-2).flatten(-3)  # (b, hs, ws, 6K): k, fn, xyz
            pose = torch.where(raster.mask[..., None], pose, 0.0)
        else:
            pose = coords
        maps = torch.cat([pose, pix[..., 3:]], -1).permute(0, 3, 1, 2)  # (b, C', hs, ws)
        return F.avg_pool2d(maps, s) if s > 1 else maps  # area downsampling to latent resolution

    @staticmethod
    def ray_maps(cameras: Cameras, reference: Cameras, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray directions (B, 3, h, w) through latent pixel centres and camera origins (B, 3, h, w),
        both in the reference camera's frame (MVP4D §3.2 v maps, S2.1 camera origin)."""
        origins, dirs = cameras.resized(w, h).pixel_rays()  # world: (B, 3), (B, h, w, 3)
        R, t = reference.R[0], reference.t[0]
        dirs_ref = dirs @ R.T  # rotate into the reference camera frame
        origin_ref = origins @ R.T + t  # (B, 3) camera centres in the reference frame
        B = len(cameras)
        return dirs_ref.permute(0, 3, 1, 2), origin_ref.view(B, 3, 1, 1).expand(B, 3, h, w)

    # -- the two uses in MVP4D ---------------------------------------------------------------------------
    def reference(self, params: HeadParams, camera: Cameras, outcrop: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning ``(C, h, w)`` of the reference image (b = 1, no motion). ``params``: one frame."""
        if params.jaw.shape[:-1] != ():
            raise Morph4DError(f"the reference takes one frame of parameters, got batch {tuple(params.jaw.shape[:-1])}")
        posed, offsets = self.vertices_and_offsets(params)
        return self.maps(posed[None], offsets[None], camera, camera, torch.ones(1),
                         None if outcrop is None else outcrop[None])[0]

    def video(self, params: HeadParams, cameras: Cameras, reference: Cameras,
              given: torch.Tensor | None = None, outcrop: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning ``(V, F_lat, C, h, w)`` of V views (one static camera each) of an F-frame animation.

        params: (F, ...) with F = 1 + 4k; given: (V, F_lat) bool, the b mask per view and latent frame
        (generation modes 2-4), default all False; outcrop: (V, h, w) or None.
        """
        if params.jaw.dim() != 2:
            raise Morph4DError(f"video parameters must be (F, ...) per frame, got jaw {tuple(params.jaw.shape)}")
        keep = kept_frames(params.jaw.shape[0])
        V, K = len(cameras), len(keep)
        given = torch.zeros(V, K, dtype=torch.bool) if given is None else given
        if given.shape != (V, K):
            raise Morph4DError(f"given must be (V={V}, F_lat={K}), got {tuple(given.shape)}")
        posed, offsets = self.vertices_and_offsets(params)  # (F, N, 3) each
        vk, ok = posed[keep], offsets[keep]  # (K, N, 3) kept frames
        # the 3 dropped frames of each kept frame's group; frame 0 has none (its own vertices: zero motion)
        dropped = torch.stack([vk[0].expand(3, -1, -1)] + [posed[k - 3: k] for k in keep[1:]])  # (K, 3, N, 3)
        idx_cam = torch.arange(V).repeat_interleave(K)  # batch = (view, latent frame), view-major
        cams = cameras[idx_cam]
        out = self.maps(vk.repeat(V, 1, 1), ok.repeat(V, 1, 1), cams, reference, given.reshape(-1),
                        None if outcrop is None else outcrop[idx_cam], dropped.repeat(V, 1, 1, 1))
        return out.reshape(V, K, *out.shape[1:])


def fill_projection(cond: torch.Tensor, layout: ConditioningLayout, latents: torch.Tensor,
                    confidence: torch.Tensor) -> torch.Tensor:
    """``cond`` (..., C, h, w) with its ``projection`` group set to the encoded reference projection ``latents``
    (..., 16, h, w) and its ``confidence`` (..., 1, h, w) (``conditioning.projection.projection_conditioning``).
    A layout without the group is refused: the projection would be dropped silently."""
    n = layout.projection.stop - layout.projection.start
    if n == 0:
        raise Morph4DError(f"this conditioning layout has no projection channels: {layout.describe()}")
    if latents.shape[-3] + confidence.shape[-3] != n or latents.shape[:-3] != cond.shape[:-3] \
            or confidence.shape[:-3] != cond.shape[:-3]:
        raise Morph4DError(f"projection latents {tuple(latents.shape)} + confidence {tuple(confidence.shape)} do "
                           f"not fit the {n} projection channels of conditioning {tuple(cond.shape)}")
    out = cond.clone()
    out[..., layout.projection, :, :] = torch.cat([latents, confidence], -3).to(cond.dtype)
    return out
