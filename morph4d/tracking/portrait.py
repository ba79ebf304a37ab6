"""A user's portrait photo -> MVP4D's tracked reference (§3 / S2.1): read safely, track, crop, matte.

1. ``read_photo``: any PIL-readable file; size checked from the header before decoding (decompression bombs
   refused by ``validate.open_image``), EXIF orientation applied, large photos reduced while decoding
   (JPEG draft mode, then ``Image.reduce``) to at most ``WORK_SIDE`` px on the longer side, every mode
   (1, L, P, RGB, RGBA, LA, PA, CMYK, YCbCr, I;16, I, F) brought to RGB in [0, 1]; transparent pixels over white.
2. ``track_photo``: face -> landmarks + irises (``observe``) -> fit of shape, expression, jaw, eyes, head pose
   and focal length (``fit``) on the whole photo.
3. crop: square, 1.25x the tight box of the projected head vertices, centred (MVP4D S2.1, ``cameras.
   head_crop_boxes``), resampled to the generation's resolution; crop pixels outside the photo are white and
   marked in the outcropping mask.
4. matte: the selfie segmenter (person incl. hair) on the crop; the crop composited over white (MVP4D: the
   background is matted to white).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from morph4d.cameras import head_crop_boxes, outcrop_mask
from morph4d.errors import Morph4DError
from morph4d.generation.reference import Reference
from morph4d.heads import HeadModel
from morph4d.tracking.detect import FaceModels
from morph4d.tracking.embedding import LandmarkEmbedding
from morph4d.tracking.fit import FitConfig, LandmarkHead, Track, fit_landmarks, tracking_camera
from morph4d.tracking.observe import FrameEvidence, observe_image, to_observations
from morph4d.validate import IMAGE_ERRORS, open_image

WORK_SIDE = 2048      # photos are tracked at most this large (longer side); the crop is far smaller
MIN_SIDE = 64         # smaller photos cannot hold a trackable face
CROP_SCALE = 1.25     # MVP4D S2.1: the square crop is 25% larger than the tight head box


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 (H, W, 3) RGB in [0, 1]; transparency composited over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255) else \
            (255.0 if im.mode == "I" else max(float(a.max()), 1.0))
        g = np.clip(a / top, 0, 1)
        return np.repeat(g[..., None], 3, -1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + (1 - alpha)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def read_photo(path, what: str = "photo") -> tuple[np.ndarray, float]:
    """The photo as float32 (H, W, 3) in [0, 1] with EXIF orientation applied, reduced to ``WORK_SIDE`` at
    most, and the factor it was reduced by (1 = full size)."""
    where = f"{what} {path}"
    with open_image(path, where) as im:
        W, H = im.size
        if min(W, H) < MIN_SIDE:
            raise Morph4DError(f"{where} is {W}x{H} pixels; a portrait must be at least {MIN_SIDE}x{MIN_SIDE} "
                               f"(the face needs ~64 pixels across to be tracked)")
        try:
            if im.format == "JPEG" and max(W, H) > WORK_SIDE:
                im.draft("RGB", (WORK_SIDE, WORK_SIDE))  # decode at 1/2, 1/4 or 1/8 scale: bounded memory
            im = ImageOps.exif_transpose(im)
            factor = max(im.size) / WORK_SIDE
            if factor > 1:
                im = im.reduce(int(np.ceil(factor))) if im.mode not in ("P", "1") else im.convert("RGBA").reduce(
                    int(np.ceil(factor)))
            image = _to_rgb(im)
        except IMAGE_ERRORS as e:
            raise Morph4DError(f"{where} is not a readable image ({e})") from None
    return np.ascontiguousarray(image), max(W, H) / max(image.shape[:2]) if image.shape[0] else 1.0


@dataclass
class TrackedPhoto:
    reference: Reference
    track: Track
    evidence: FrameEvidence
    faces: int                 # faces found (the largest is tracked)
    photo: np.ndarray          # the photo as tracked (H, W, 3)
    box: torch.Tensor          # (4,) crop box in the photo's pixels
    matte: np.ndarray          # (res, res) person matte of the crop
    background: torch.Tensor   # (3, res, res) the crop with the person (and the outcrop) inpainted away


def background_plate(crop: torch.Tensor, matte: np.ndarray, outcrop: torch.Tensor) -> torch.Tensor:
    """The static background of a portrait crop (IM-Portrait §3.4: talking heads are composited over the photo's
    inpainted background): the person (``matte`` > 0.02, grown by ~3% of the crop so hair edges go too) and the
    outcrop filled by OpenCV's Telea inpainting. ``crop`` (3, R, R) in [0, 1] -> (3, R, R). Ours: which inpainting
    (the paper does not say; a fast, offline one, good for the smooth backdrops of portraits)."""
    import cv2
    R = crop.shape[-1]
    grow = max(1, round(0.03 * R))
    hole = ((matte > 0.02) | (outcrop.numpy() > 0)).astype(np.uint8)
    hole = cv2.dilate(hole, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    if hole.all():                                        # nothing of the backdrop is left: a plain grey one
        return torch.full_like(crop, 0.5)
    image = (crop.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    filled = cv2.inpaint(np.ascontiguousarray(image), hole, max(3, R // 16), cv2.INPAINT_TELEA)
    return torch.from_numpy(filled.astype(np.float32) / 255).permute(2, 0, 1)


def crop_photo(image: torch.Tensor, box: torch.Tensor, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop (3, H, W) to the square ``box`` (u0, v0, size, size) resampled to ``res`` px (bilinear, pixel
    centres at +0.5: CONVENTIONS.md); white outside the photo. Returns (crop (3, res, res), outcrop (res, res))."""
    import torch.nn.functional as F

    H, W = image.shape[1:]
    c = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    u, v = box[0] + c * box[2], box[1] + c * box[3]
    # area-average first when shrinking a lot, so bilinear sampling does not alias
    shrink = float(box[2]) / res
    src = image[None]
    if shrink > 2:
        k = int(shrink // 2) * 2 - 1 if int(shrink) % 2 == 0 else int(shrink)
        src = F.avg_pool2d(src, k, stride=1, padding=k // 2, count_include_pad=False)
    grid = torch.stack(torch.meshgrid(2 * v / H - 1, 2 * u / W - 1, indexing="ij")[::-1], -1)[None]
    crop = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    outcrop = outcrop_mask(box[None], W, H, res)[0]
    return torch.where(outcrop.bool(), torch.ones_like(crop), crop).clamp(0, 1), outcrop


def track_photo(image: np.ndarray, model: HeadModel, emb: LandmarkEmbedding, res: int, fm: FaceModels,
                cfg: FitConfig = FitConfig(), what: str = "photo", head: LandmarkHead | None = None) -> TrackedPhoto:
    """Track one photo (float (H, W, 3)) and make its reference crop at ``res`` px (module docstring)."""
    H, W = image.shape[:2]
    ev, _, faces = observe_image(fm, image, what)
    track = fit_landmarks(model, emb, to_observations([ev], W, H), cfg, head=head)
    camera = tracking_camera(track.focal, W, H)
    verts = model(track.params)  # (1, N, 3)
    uv = camera.project(verts)[0]
    if bool((uv[:, 2] <= 0).any()):
        raise Morph4DError(f"{what}: the fitted head does not lie in front of the camera; expected a portrait")
    box = head_crop_boxes(uv[None, :, :2], CROP_SCALE)[0]
    crop, outcrop = crop_photo(torch.from_numpy(image).permute(2, 0, 1), box, res)
    matte = fm.person_matte(crop.permute(1, 2, 0).numpy().astype(np.float32).copy())
    matte = np.where(outcrop.numpy() > 0, 0.0, matte).astype(np.float32)
    m = torch.from_numpy(matte)[None]
    matted = crop * m + (1 - m)
    params = track.params
    ref = Reference(matted, params.replace(shape=params.shape.reshape(-1),
                                           **{k: getattr(params, k)[0] for k in ("expression", "jaw", "neck", "eyes",
                                                                                  "rotation", "translation")}),
                    camera.cropped(box[None], res), model.name, outcrop if bool(outcrop.any()) else None)
    return TrackedPhoto(ref, track, ev, faces, image, box, matte, background_plate(crop, matte, outcrop))


