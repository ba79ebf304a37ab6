"""Held-out synthetic identities: the ground truth that the quality report and the demo start from.

Identity seeds 900000+ (``identity.EVAL_SEEDS``) never enter training (the loader refuses them). For one
of them this builds the scene (head + hair/glasses meshes, texture, lighting), a random animation with the
identity's shape, and a reference render at frame 0 from an azimuth of ``REFERENCE_AZIMUTHS`` (cycled so
that generated views cover 0-70 degrees from the reference); ``ground_truth`` renders it from any cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from morph4d.cameras import orbit_cameras
from morph4d.data.format import mix_seed, select_frames
from morph4d.data.identity import EVAL_SEEDS, sample_identity
from morph4d.data.scene import RenderConfig, make_scene, render_sequence, sample_lighting
from morph4d.data.synth import random_animation
from morph4d.errors import Morph4DError
from morph4d.heads import HeadParams

REFERENCE_AZIMUTHS = (0.0, -25.0, 25.0, -15.0, 15.0, -35.0, 35.0, 0.0)
LIKE_SCAN = 1000   # seeds scanned per validation identity for one with a held-out identity's hair style


@dataclass
class HeldOut:
    """One held-out identity: scene, animation, reference camera/image and ground-truth renders."""
    seed: int
    scene: object
    lighting: object
    params: HeadParams            # (F, ...) with the identity's shape
    reference_camera: object
    reference_image: torch.Tensor  # (3, H, W)
    reference_azimuth: float


def held_out_identity(head, k: int, frames: int, res: int, radius: float, fov: float,
                      first_seed: int | None = None, seed: int | None = None) -> HeldOut:
    """Held-out identity ``k`` (seed 900000 + k, or ``first_seed`` + k for validation, or ``seed`` itself: a
    ``validation_seeds`` pick): a random animation of ``frames`` frames and its reference render at frame 0 from
    azimuth ``REFERENCE_AZIMUTHS[k % 8]``."""
    if seed is None:
        seed = (EVAL_SEEDS.start if first_seed is None else first_seed) + k
    identity = sample_identity(seed, head)
    g = torch.Generator().manual_seed(mix_seed("quality", seed))
    lighting = sample_lighting(g)
    params, _ = random_animation(head, frames, 25.0, g)
    params = params.replace(shape=identity.shape.clone())
    scene = make_scene(head, identity, res)
    az = REFERENCE_AZIMUTHS[k % len(REFERENCE_AZIMUTHS)]
    cam = orbit_cameras(torch.tensor([az]), torch.tensor([0.0]), radius, fov, res, res)
    image, _ = render_sequence(scene, select_frames(params, [0]), cam, lighting, RenderConfig())
    return HeldOut(seed, scene, lighting, params, cam, image[0, 0].permute(2, 0, 1), az)


def validation_seeds(head, first_seed: int, n: int, like_held_out: bool = False) -> list[int]:
    """The seeds of ``n`` validation identities from ``first_seed``: ``first_seed + k``, or (``like_held_out``) for
    each held-out identity k in turn the next seed whose hair style is that identity's, so that the validation set
    has the held-out set's hair (issue 17: seeds 5000-5011 are mostly short-haired or bald and the first six
    held-out identities all long, medium or curly; hair-related choices made on the first did not carry over)."""
    if first_seed < 0:
        raise Morph4DError(f"validation seeds must be >= 0 and outside the held-out seeds {EVAL_SEEDS.start}-"
                           f"{EVAL_SEEDS.stop - 1}, got first seed {first_seed}")
    if not like_held_out:
        seeds = [first_seed + k for k in range(n)]
    else:
        seeds, s = [], first_seed
        for k in range(n):
            style = sample_identity(EVAL_SEEDS.start + k, head).appearance.hair_style
            stop = s + LIKE_SCAN
            while sample_identity(s, head).appearance.hair_style != style:
                s += 1
                if s == stop:
                    raise Morph4DError(f"no validation identity with {style} hair in seeds "
                                       f"{stop - LIKE_SCAN}-{stop - 1}")
            seeds.append(s)
            s += 1
    bad = [s for s in seeds if s in EVAL_SEEDS]
    if bad:
        raise Morph4DError(f"validation seeds {seeds[0]}-{seeds[-1]} must be >= 0 and outside the held-out seeds "
                           f"{EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1}; pick another first seed")
    return seeds


def ground_truth(h: HeldOut, cameras, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders of the held-out identity from ``cameras``: (V, F, 3, H, W) images over white, (V, F, 1, H, W)
    alpha."""
    images, alpha = render_sequence(h.scene, select_frames(h.params, list(range(frames))), cameras, h.lighting,
                                    RenderConfig())
    return images.permute(0, 1, 4, 2, 3), alpha[:, :, None]


__all__ = ["REFERENCE_AZIMUTHS", "LIKE_SCAN", "HeldOut", "ground_truth", "held_out_identity", "validation_seeds"]
