"""The reference image of MVP4D: a portrait with its tracking (head parameters and camera).

File format (``.npz``, plain arrays, version 1): ``image`` (H, W, 3) float in [0, 1] or uint8 on a white
background, the head parameter fields of ``HeadParams`` for ONE frame (``shape``, ``expression``, ``jaw``,
``neck``, ``eyes``, ``rotation``, ``translation``), the camera ``R`` (3, 3), ``t`` (3,), ``K`` (3, 3)
(OpenCV world-to-camera, pixel intrinsics for this image), ``head_model`` ("builtin" / "flame"), and
optionally ``outcrop`` (H, W) when the image is a crop that reaches outside the original photo.

``canonicalize`` moves the head's global rotation and translation into the camera, so that the head sits
in its canonical frame (facing +z at the origin) where MVP4D's view sets are defined (§4: views are
"relative to the forward-facing direction of the head").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from morph4d.cameras import Cameras, outcrop_mask
from morph4d.data.format import read_sequence, select_frames
from morph4d.data.heldout import HeldOut
from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel, HeadParams
from morph4d.heads.model import axis_angle_to_matrix
from morph4d.io import atomic_path
from morph4d.validate import check_finite, check_image_size, check_intrinsics, check_range, check_rotation, read_npz

PARAM_FIELDS = ("shape", "expression", "jaw", "neck", "eyes", "rotation", "translation")


@dataclass
class Reference:
    image: torch.Tensor            # (3, H, W) in [0, 1]
    params: HeadParams             # one frame
    camera: Cameras                # one camera
    head_model: str
    outcrop: torch.Tensor | None = None  # (H, W) 1 outside the original photo

    def save(self, path: str | Path) -> None:
        arrays = {k: getattr(self.params, k).detach().cpu().numpy() for k in PARAM_FIELDS}
        arrays.update(image=self.image.permute(1, 2, 0).cpu().numpy(), R=self.camera.R[0].numpy(),
                      t=self.camera.t[0].numpy(), K=self.camera.K[0].numpy(), head_model=np.array(self.head_model),
                      version=np.array(1))
        if self.outcrop is not None:
            arrays["outcrop"] = self.outcrop.numpy()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)


def held_out_reference(h: HeldOut, head_model: str) -> Reference:
    """The tracked reference of a held-out synthetic identity: its reference render with frame 0's parameters."""
    return Reference(h.reference_image, select_frames(h.params, 0), h.reference_camera, head_model)


REFERENCE_VERSIONS = (1,)  # versions of the tracked reference file this morph4d reads (files before 1 had none)
IMAGE_SLACK = 0.1          # float images overshoot [0, 1] after resampling (bicubic, Lanczos: up to ~10%): clamped
RESOLUTION_MULTIPLE = 16         # 8x autoencoder x 2x2 patches (MVP4D S2.2): the sides a generation can take
MAX_REFERENCE_RESOLUTION = 1024  # MVP4D generates at 512 px; a bound on what one reference may ask of memory


def load_reference(path: str | Path, model: HeadModel) -> Reference:
    """Load a tracked reference for ``model``; every array is checked (types, shapes, finite values, image in
    [0, 1], a rotation, positive intrinsics, the image size limit) before it is used."""
    path = Path(path)
    if path.suffix.lower() != ".npz" and path.is_file():
        raise Morph4DError(f"{path} is a plain image without tracking; the reference must be a tracked .npz "
                           f"(image + head parameters + camera, see morph4d/generation/reference.py), e.g. one "
                           f"written by `morph4d reference --sequence DATASET/SEQUENCE --view V --frame F --out "
                           f"REF.npz`")
    data = read_npz(path, "reference")
    needed = {"image", "R", "t", "K", "head_model", *PARAM_FIELDS}
    if needed - set(data):
        raise Morph4DError(f"{path} has no tracking for the reference: missing {sorted(needed - set(data))}; a "
                           f"reference needs the image, the head parameters {list(PARAM_FIELDS)} and the camera R, "
                           f"t, K")
    version = int(data["version"]) if "version" in data and data["version"].size == 1 else None
    if "version" in data and version not in REFERENCE_VERSIONS:
        raise Morph4DError(f"{path}: reference format version {data['version']} is unknown (this morph4d reads "
                           f"{list(REFERENCE_VERSIONS)})")
    if str(data["head_model"]) != model.name:
        raise Morph4DError(f"{path}: the reference was tracked with the '{data['head_model']}' head model, but the "
                           f"head model in use is '{model.name}'")
    raw = data["image"]
    if raw.ndim != 3 or raw.shape[-1] != 3 or (raw.dtype.kind != "f" and raw.dtype != np.uint8):
        raise Morph4DError(f"{path}: image must be an (H, W, 3) array of uint8 or floats in [0, 1], got "
                           f"{raw.dtype} {tuple(raw.shape)}")
    H, W = raw.shape[:2]
    check_image_size(W, H, f"{path}: image")
    image = torch.as_tensor(raw)
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    check_range(image, "image", str(path), -IMAGE_SLACK, 1.0 + IMAGE_SLACK)
    image = image.clamp(0, 1)
    for key, shape in (("R", (3, 3)), ("t", (3,)), ("K", (3, 3))):
        if data[key].shape != shape or data[key].dtype.kind not in "uif":
            raise Morph4DError(f"{path}: camera {key} must be a number array of shape {shape}, got "
                               f"{data[key].dtype} {tuple(data[key].shape)}")
    check_rotation(data["R"], "camera R", str(path))
    check_finite(torch.as_tensor(data["t"], dtype=torch.float32), "camera t", str(path))
    check_intrinsics(data["K"], "camera K", str(path))
    for k in PARAM_FIELDS:
        if data[k].dtype.kind not in "uif":
            raise Morph4DError(f"{path}: head parameter {k} must be numbers, got {data[k].dtype}")
        check_finite(torch.as_tensor(data[k], dtype=torch.float32), k, str(path))
    params = HeadParams(**{k: torch.as_tensor(data[k], dtype=torch.float32) for k in PARAM_FIELDS})
    params.check(model.num_shape, model.num_expression)
    camera = Cameras(torch.as_tensor(data["R"], dtype=torch.float32)[None],
                     torch.as_tensor(data["t"], dtype=torch.float32)[None],
                     torch.as_tensor(data["K"], dtype=torch.float32)[None], W, H)
    outcrop = None
    if "outcrop" in data:
        if data["outcrop"].shape != (H, W):
            raise Morph4DError(f"{path}: outcrop must be ({H}, {W}) like the image, got {tuple(data['outcrop'].shape)}")
        outcrop = torch.as_tensor(data["outcrop"], dtype=torch.float32)
        check_range(outcrop, "outcrop", str(path), 0.0, 1.0)
    return Reference(image.permute(2, 0, 1).contiguous(), params, camera, model.name, outcrop)


def canonicalize(ref: Reference, model: HeadModel) -> Reference:
    """The same picture with the head's global rotation/translation folded into the camera.

    HeadModel poses x -> R_h (x - j0) + j0 + T about the root joint j0, so a camera (R, t) seeing the posed
    head equals the camera (R R_h, R (j0 - R_h j0 + T) + t) seeing the head with zero global transform.
    """
    p = ref.params
    j0 = model.joints(p.replace(rotation=torch.zeros(3), translation=torch.zeros(3)))[0]
    Rh = axis_angle_to_matrix(p.rotation)
    R, t = ref.camera.R[0], ref.camera.t[0]
    cam = Cameras((R @ Rh)[None], (R @ (j0 - Rh @ j0 + p.translation) + t)[None], ref.camera.K.clone(),
                  ref.camera.width, ref.camera.height)
    zero = torch.zeros(3)
    return Reference(ref.image, p.replace(rotation=zero, translation=zero), cam, ref.head_model, ref.outcrop)


def view_angles(camera: Cameras) -> tuple[float, float]:
    """Azimuth and elevation (degrees) of a camera centre seen from the head origin (CONVENTIONS.md)."""
    c = camera.centers[0].double()
    d = c / c.norm()
    return float(torch.rad2deg(torch.atan2(d[0], d[2]))), float(torch.rad2deg(torch.asin(d[1].clamp(-1, 1))))


def reference_from_sequence(sequence: str | Path, view: int, frame: int, resolution: int) -> Reference:
    """A tracked reference from one view and frame of a dataset sequence (format v1, docs/DATA.md): the
    image cropped to the sequence's head box (MVP4D S2.1: 1.25x the projected head, smoothed) and resized
    to ``resolution`` px, its camera cropped alike, the frame's head parameters, and the outcropping mask."""
    import torch.nn.functional as F

    if not RESOLUTION_MULTIPLE <= resolution <= MAX_REFERENCE_RESOLUTION or resolution % RESOLUTION_MULTIPLE:
        raise Morph4DError(f"--res must be a multiple of {RESOLUTION_MULTIPLE} from {RESOLUTION_MULTIPLE} to "
                           f"{MAX_REFERENCE_RESOLUTION} (the generation's resolutions), got {resolution}")
    seq = read_sequence(sequence)
    if not (0 <= view < seq.num_views and 0 <= frame < seq.num_frames):
        raise Morph4DError(f"sequence '{seq.name}' has {seq.num_views} views and {seq.num_frames} frames; got view "
                           f"{view}, frame {frame}")
    rgb, _ = seq.read_images([view], [frame])
    image = rgb[0, 0].permute(2, 0, 1)  # (3, H, W)
    H, W = image.shape[1:]
    box = seq.boxes[view, frame][None].float()  # (1, 4) = (u0, v0, size, size)
    # crop pixel centre j + 0.5 samples u0 + (j + 0.5) size / R (CONVENTIONS.md), as grid_sample(align_corners=False)
    c = (torch.arange(resolution) + 0.5) / resolution
    u, v = box[0, 0] + c * box[0, 2], box[0, 1] + c * box[0, 3]
    grid = torch.stack(torch.meshgrid(2 * v / H - 1, 2 * u / W - 1, indexing="ij")[::-1], -1)[None]
    crop = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    outcrop = outcrop_mask(box, W, H, resolution)[0]
    crop = torch.where(outcrop.bool(), torch.ones_like(crop), crop)  # outside the photo: white background
    return Reference(crop.clamp(0, 1), select_frames(seq.params, frame), seq.cameras[[view]].cropped(box, resolution),
                     seq.meta["head_model"], outcrop if outcrop.any() else None)
