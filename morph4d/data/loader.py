"""Training windows from morph4d datasets, sampled as MVP4D's curriculum does (§3.3, S2.2).

One item = one sequence (index i of the dataset) cut to a window of V views x F frames at D x D pixels:

1. **Window.** V distinct views drawn at random from the sequence's V_max and F consecutive frames from
   a random start in its F_max (S2.2: "we randomly select F frames and V views from each dataset video
   sequence ... depending on ... V_max and F_max"). A sequence with fewer views or frames than asked is
   an error naming it (or is skipped with ``on_short="skip"``). F must be 1 + 4k (the VAE's rule).
2. **Reference image** (S2.2): a (view, frame) outside the window, from a view in which the head faces
   the camera (angle between the head's forward axis and the direction to the camera <= ``facing_deg``),
   preferring another frame AND another view, then another frame, then another view. When no candidate
   faces the camera, the one facing it most is taken.
3. **Crops** (MVP4D S2.1): every view is cropped with ONE square box for the whole window (the mean
   centre and the largest side of its per-frame boxes in crops.npz, which are already smoothed over
   time), resampled to D x D with white outside the photo; the camera is cropped to match
   (``Cameras.cropped``) and the outcropping mask marks crop pixels outside the photo. One box per view
   keeps each view a static camera, which ``HeadConditioner.video`` expects.
4. **Conditioning** from ``morph4d.conditioning.maps.HeadConditioner``: ``video`` for the window (V, F_lat, C,
   D/8, D/8) in the reference camera's frame, ``reference`` for the reference image.

Every random choice comes from a ``torch.Generator`` seeded by (seed, epoch, index), so items are the
same in any worker process and any order; call ``set_epoch`` before each epoch (workers are re-created
per epoch unless ``persistent_workers=True``, which would keep the old epoch).

Worker processes must be started with "spawn" (``make_loader`` does): the rasterizer's numba kernels run
on numba's GNU OpenMP threading layer, which aborts a forked child once the parent has used it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from morph4d.cameras import Cameras, centre_angles, outcrop_mask
from morph4d.conditioning.maps import ConditioningConfig, HeadConditioner
from morph4d.conditioning.projection import projection_conditioning, projection_options
from morph4d.data.format import Sequence, mix_seed, open_dataset, select_frames
from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel, HeadParams
from morph4d.heads.builtin import load_builtin_head
from morph4d.heads.model import axis_angle_to_matrix
from morph4d.models.latent import LATENT_FACTOR, check_frame_count


@dataclass(frozen=True)
class WindowConfig:
    views: int = 4               # V
    frames: int = 9              # F = 1 + 4k
    resolution: int = 64         # D, divisible by 8
    facing_deg: float = 45.0     # the reference view must see the head within this angle of its front
    seed: int = 0
    on_short: str = "error"      # a sequence with fewer views/frames than asked: "error" or "skip"
    conditioning: bool = True    # False: images only, no head-model maps (autoencoder training: the maps are
    #                              ~60% of an item's cost and the autoencoder never sees them)
    near_view_deg: float | None = None  # the second view is drawn among views within this angle of the first (the
    #                              camera centres seen from the world origin), when any is; None: all views random

    def __post_init__(self):
        check_frame_count(self.frames)
        if self.views < 1:
            raise Morph4DError(f"views must be >= 1, got {self.views}")
        if self.resolution < LATENT_FACTOR or self.resolution % LATENT_FACTOR:
            raise Morph4DError(f"resolution must be a positive multiple of {LATENT_FACTOR}, got {self.resolution}")
        if not 0 < self.facing_deg <= 180:
            raise Morph4DError(f"facing_deg must be in (0, 180], got {self.facing_deg}")
        if self.near_view_deg is not None and not 0 < self.near_view_deg <= 180:
            raise Morph4DError(f"near_view_deg must be in (0, 180], got {self.near_view_deg}")
        if self.on_short not in ("error", "skip"):
            raise Morph4DError(f"on_short must be 'error' or 'skip', got {self.on_short!r}")


def facing_angles(model: HeadModel, params: HeadParams, cameras: Cameras) -> torch.Tensor:
    """Angle (deg) between the head's forward axis (+z turned by global and neck rotations) and the
    direction from the head (its neck joint) to each camera centre: ``(V, F)``."""
    with torch.no_grad():
        head = model.joints(params)[:, 1]                                            # (F, 3) neck joint
        rot = axis_angle_to_matrix(params.rotation) @ axis_angle_to_matrix(params.neck)
        forward = rot[..., :, 2]                                                     # (F, 3) R @ e_z
        to_cam = F.normalize(cameras.centers[:, None] - head[None], dim=-1)          # (V, F, 3)
        cos = (to_cam * forward[None]).sum(-1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def window_box(boxes: torch.Tensor) -> torch.Tensor:
    """One crop box for a window: per view the mean centre and largest side of ``boxes`` (v, f, 4)."""
    centre = (boxes[..., :2] + boxes[..., 2:] / 2).mean(1)                           # (v, 2)
    side = boxes[..., 2:].amax(1).amax(-1, keepdim=True)                             # (v, 1)
    return torch.cat([centre - side / 2, side, side], -1)


def crop_images(images: torch.Tensor, boxes: torch.Tensor, size: int, fill: float) -> torch.Tensor:
    """Resample ``images`` (B, C, H, W) inside square ``boxes`` (B, 4) to (B, C, size, size).

    Crop pixel centre j + 0.5 samples u0 + (j + 0.5) * side / size (CONVENTIONS: head crops); outside
    the photo the value is ``fill``. Bilinear, or area-averaged first when the crop shrinks by > 2x.
    """
    B, C, H, W = images.shape
    u0, v0, su, sv = boxes.unbind(-1)
    shrink = float((su / size).max())
    if shrink > 2:  # anti-alias: average-pool first (the box maths below uses the pooled pixel grid)
        k = int(shrink // 2)
        images = F.avg_pool2d(images, k, ceil_mode=True)   # pooled pixel j covers [j k, (j + 1) k)
        u0, su, v0, sv = u0 / k, su / k, v0 / k, sv / k
        H, W = images.shape[-2:]
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    u = u0[:, None] + c * su[:, None]                                                  # (B, S) pixel coords
    v = v0[:, None] + c * sv[:, None]
    gx, gy = 2 * u / W - 1, 2 * v / H - 1                                              # align_corners=False
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)   # (B, S, S, 2)
    out = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


class MultiViewWindows(Dataset):
    """Windows of V views x F frames at D px from one or more morph4d dataset folders (see module doc).

    Each item is a dict:
      images (V, F, 3, D, D), alpha (V, F, 1, D, D): the window, RGB over white in [0, 1]
      reference (3, D, D), reference_alpha (1, D, D)
      conditioning (V, F_lat, C, D/8, D/8), reference_conditioning (C, D/8, D/8)  (ConditioningLayout; absent with
        ``WindowConfig(conditioning=False)``); with ``ConditioningConfig(reference_projection=True)`` also
        projection (V, F, 3, D, D) and projection_confidence (V, F_lat, 1, D/8, D/8)
        (``conditioning.projection.projection_conditioning``: the reference through the head mesh, to encode)
      R (V, 3, 3), t (V, 3), K (V, 3, 3): cropped window cameras; reference_R, reference_t, reference_K
      view_index (V,), frame_index (F,), reference_index (2,) = (view, frame); sequence: the name
    """

    def __init__(self, roots, cfg: WindowConfig = WindowConfig(), model: HeadModel | None = None,
                 conditioning: ConditioningConfig = ConditioningConfig()):
        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        if not roots:
            raise Morph4DError("MultiViewWindows needs at least one dataset folder")
        self.cfg = cfg
        sequences: list[Sequence] = []
        for root in roots:
            sequences += open_dataset(root)
        kinds = sorted({s.meta["head_model"] for s in sequences})
        if len(kinds) > 1:
            raise Morph4DError(f"the datasets mix head models {kinds}; use one head model per loader")
        if model is None:
            if kinds[0] != "builtin":
                raise Morph4DError(f"the datasets use the '{kinds[0]}' head model; pass it as model=...")
            model = load_builtin_head()
        if model.name != kinds[0]:
            raise Morph4DError(f"the datasets use the '{kinds[0]}' head model, got model '{model.name}'")
        self.sequences = []
        for s in sequences:
            problem = self._shortfall(s)
            if problem and cfg.on_short == "error":
                raise Morph4DError(f"sequence '{s.name}' ({s.path}): {problem}")
            if not problem:
                self.sequences.append(s)
        if not self.sequences:
            raise Morph4DError(f"no sequence in {', '.join(map(str, roots))} has {cfg.views} views x {cfg.frames} "
                               f"frames plus a reference image")
        self.model = model
        self.conditioner = HeadConditioner(model, conditioning)
        self.epoch = 0
        self._angles: dict[int, torch.Tensor] = {}

    def _shortfall(self, s: Sequence) -> str | None:
        V, Fr = self.cfg.views, self.cfg.frames
        if s.num_views < V or s.num_frames < Fr:
            return (f"has {s.num_views} view(s) x {s.num_frames} frame(s), fewer than the {V} x {Fr} asked "
                    f"(modality {s.meta['modality']})")
        if s.num_views == V and s.num_frames == Fr:
            return (f"has exactly {V} view(s) x {Fr} frame(s): no (view, frame) is left for a reference image "
                    f"outside the window")
        return None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sequences)

    def generator(self, index: int) -> torch.Generator:
        """The generator of item ``index`` this epoch (seeded by seed, epoch and index)."""
        return torch.Generator().manual_seed(mix_seed("window", self.cfg.seed, self.epoch, index))

    def _near_pair(self, s, views: list[int], g: torch.Generator) -> list[int]:
        """``views`` with its second entry replaced by a random view within ``near_view_deg`` of the first."""
        angle = centre_angles(s.cameras)[views[0]]
        near = [v for v in range(s.num_views) if v != views[0] and float(angle[v]) <= self.cfg.near_view_deg]
        if not near:
            return views
        pick = near[int(torch.randint(len(near), (), generator=g))]
        rest = [v for v in views[1:] if v != pick]
        return [views[0], pick] + rest[: self.cfg.views - 2]

    def sample_window(self, index: int) -> tuple[list[int], list[int], tuple[int, int]]:
        """The random choices of item ``index``: view indices, frame indices, reference (view, frame)."""
        s, cfg = self.sequences[index], self.cfg
        g = self.generator(index)
        views = torch.randperm(s.num_views, generator=g)[: cfg.views].tolist()
        if cfg.near_view_deg is not None and cfg.views >= 2:
            views = self._near_pair(s, views, g)
        start = int(torch.randint(s.num_frames - cfg.frames + 1, (), generator=g))
        frames = list(range(start, start + cfg.frames))
        if index not in self._angles:   # per process; depends only on the sequence
            self._angles[index] = facing_angles(self.model, s.params, s.cameras)      # (V_max, F_max)
        angle = self._angles[index]
        in_views = torch.zeros(s.num_views, dtype=torch.bool)
        in_views[views] = True
        in_frames = torch.zeros(s.num_frames, dtype=torch.bool)
        in_frames[frames] = True
        outside = ~(in_views[:, None] & in_frames[None, :])
        # S2.2: a view where the head faces the camera; among those prefer another frame AND view, then
        # another frame, then another view. If no view outside the window faces it, the most facing one.
        facing = outside & (angle <= cfg.facing_deg)
        if not facing.any():
            best = torch.where(outside, angle, torch.full_like(angle, math.inf)).min()
            facing = outside & (angle == best)
        for tier in (~in_views[:, None] & ~in_frames[None, :], ~in_frames[None, :], ~in_views[:, None]):
            if (tier & facing).any():
                facing = tier & facing
                break
        candidates = facing.nonzero()
        pick = candidates[int(torch.randint(len(candidates), (), generator=g))]
        return views, frames, (int(pick[0]), int(pick[1]))

    def __getitem__(self, index: int) -> dict:
        s, cfg, D = self.sequences[index], self.cfg, self.cfg.resolution
        views, frames, (rv, rf) = self.sample_window(index)
        rgb, alpha = s.read_images(views, frames)                                     # (V, F, H, W, 3/-)
        ref_rgb, ref_alpha = s.read_images([rv], [rf])
        V, Fr, H, W = alpha.shape
        box = window_box(s.boxes[views][:, frames])                                   # (V, 4)
        ref_box = window_box(s.boxes[rv:rv + 1, rf:rf + 1])                           # (1, 4)
        stack = torch.cat([rgb, alpha[..., None]], -1).permute(0, 1, 4, 2, 3).reshape(V * Fr, 4, H, W)
        crops = torch.cat([crop_images(stack[:, :3], box.repeat_interleave(Fr, 0), D, 1.0),
                           crop_images(stack[:, 3:], box.repeat_interleave(Fr, 0), D, 0.0)], 1)
        crops = crops.reshape(V, Fr, 4, D, D)
        ref = torch.cat([ref_rgb, ref_alpha[..., None]], -1)[0, 0].permute(2, 0, 1)[None]
        ref = torch.cat([crop_images(ref[:, :3], ref_box, D, 1.0), crop_images(ref[:, 3:], ref_box, D, 0.0)], 1)[0]
        cams = s.cameras[views].cropped(box, D)
        ref_cam = s.cameras[rv].cropped(ref_box, D)
        h = D // LATENT_FACTOR
        maps = {}
        if cfg.conditioning:
            with torch.no_grad():
                maps["conditioning"] = self.conditioner.video(select_frames(s.params, frames), cams, ref_cam,
                                                              outcrop=outcrop_mask(box, W, H, h))
                maps["reference_conditioning"] = self.conditioner.reference(
                    select_frames(s.params, rf), ref_cam, outcrop=outcrop_mask(ref_box, W, H, h)[0])
                if self.conditioner.cfg.reference_projection:                  # ours (issue 17), encoded later
                    maps["projection"], maps["projection_confidence"] = projection_conditioning(
                        self.model(select_frames(s.params, [rf]))[0], self.model(select_frames(s.params, frames)),
                        self.model.faces, ref_cam, ref[:3], cams,
                        **projection_options(self.model, self.conditioner.cfg.projection_version))
        return {"images": crops[:, :, :3].contiguous(), "alpha": crops[:, :, 3:].contiguous(),
                "reference": ref[:3].contiguous(), "reference_alpha": ref[3:].contiguous(), **maps,
                "R": cams.R, "t": cams.t, "K": cams.K,
                "reference_R": ref_cam.R[0], "reference_t": ref_cam.t[0], "reference_K": ref_cam.K[0],
                "view_index": torch.tensor(views), "frame_index": torch.tensor(frames),
                "reference_index": torch.tensor([rv, rf]), "sequence": s.name}


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, shuffle: bool = True,
                generator: torch.Generator | None = None, **kwargs) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` whose workers start by "spawn" (safe with numba's OpenMP layer).

    Items do not depend on the worker they run in; ``generator`` only orders the items (shuffle).
    """
    context = "spawn" if num_workers > 0 else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      multiprocessing_context=context, generator=generator, **kwargs)


__all__ = ["WindowConfig", "MultiViewWindows", "make_loader", "facing_angles", "window_box", "crop_images"]
