"""2D evidence of one image or one video frame: the face, its 468 landmarks, irises and eye openness.

``observe_image`` finds the face (largest detection; the caller is told how many there were) and runs the face
mesh twice, the second time on the crop its own landmarks give (MediaPipe's tracking loop, which centres and
levels the face better than the detector's box). ``observe_frame`` continues a video from the previous frame's
landmarks and falls back to detection when the face is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from morph4d.errors import Morph4DError
from morph4d.tracking.detect import Detection, FaceModels, Roi

PRESENCE_MIN = 0.5
# eyelid pairs (upper, lower) and corners per eye, image-left eye first (MediaPipe face-mesh topology)
EYELIDS = ((159, 145, 33, 133), (386, 374, 362, 263))


@dataclass
class Observations:
    """Detected 2D evidence for F frames: face-mesh landmarks (F, 468, 2), irises (F, 2, 2) image-left eye first,
    eye openness (F, 2) in [0, 1] (0 = closed: its iris is ignored)."""
    landmarks: torch.Tensor
    irises: torch.Tensor | None
    openness: torch.Tensor | None
    width: int
    height: int

    @property
    def frames(self) -> int:
        return self.landmarks.shape[0]

    def scale(self) -> torch.Tensor:
        """Inter-ocular distance (outer eye corners 33 - 263) in pixels, (F,)."""
        return (self.landmarks[:, 33] - self.landmarks[:, 263]).norm(dim=-1).clamp(min=4.0)


@dataclass
class FrameEvidence:
    landmarks: np.ndarray   # (468, 3) pixels (+ relative depth)
    irises: np.ndarray      # (2, 5, 2) pixels, image-left eye first
    openness: np.ndarray    # (2,) in [0, 1]
    presence: float
    roi: Roi


def eye_openness(pts: np.ndarray) -> np.ndarray:
    """Per eye: eyelid gap / eye width mapped to [0, 1] (0 at 0.08 = closed, 1 from 0.18 up)."""
    out = []
    for up, low, a, b in EYELIDS:
        ratio = np.linalg.norm(pts[up, :2] - pts[low, :2]) / max(np.linalg.norm(pts[a, :2] - pts[b, :2]), 1e-6)
        out.append(np.clip((ratio - 0.08) / 0.10, 0.0, 1.0))
    return np.array(out, np.float32)


# crop variations the face mesh is averaged over (scale, shifts as fractions of the ROI, rotation): test-time
# augmentation against the detector's jitter (ours; MediaPipe runs one crop)
ROI_JITTER = ((1.0, 0.0, 0.0, 0.0), (0.9, 0.0, 0.0, 0.0), (1.1, 0.0, 0.0, 0.0), (1.0, 0.05, 0.0, 0.0),
              (1.0, -0.05, 0.0, 0.0), (1.0, 0.0, 0.05, 0.0), (1.0, 0.0, -0.05, 0.0), (1.0, 0.0, 0.0, 0.1),
              (1.0, 0.0, 0.0, -0.1))  # (scale, shift x, shift y, rotation in radians)


def _jittered(fm: FaceModels, image: np.ndarray, roi: Roi, jitter) -> tuple[np.ndarray, float]:
    pts, pres = [], []
    c, s = np.cos(roi.angle), np.sin(roi.angle)
    for scale, dx, dy, rot in jitter:
        shift = np.array([[c, -s], [s, c]]) @ np.array([dx, dy]) * roi.size
        p, q = fm.mesh(image, Roi(roi.cx + shift[0], roi.cy + shift[1], roi.size * scale, roi.angle + rot))
        pts.append(p)
        pres.append(q)
    return np.mean(pts, 0), float(np.mean(pres))


def _evidence(fm: FaceModels, image: np.ndarray, roi: Roi, jitter=ROI_JITTER) -> FrameEvidence:
    pts, presence = fm.mesh(image, roi)
    pts, presence = _jittered(fm, image, fm.roi_from_landmarks(pts), jitter)
    return FrameEvidence(pts, fm.irises(image, pts), eye_openness(pts), presence, fm.roi_from_landmarks(pts))


def observe_image(fm: FaceModels, image: np.ndarray, what: str) -> tuple[FrameEvidence, Detection, int]:
    """The largest face of ``image`` (float (H, W, 3) in [0, 1]): (evidence, its detection, number of faces)."""
    faces = fm.detect(image)
    if not faces:
        raise Morph4DError(f"{what}: no face found; expected a photo with one face, at least ~64 pixels across, "
                           f"seen from the front or the side up to ~60 degrees")
    ev = _evidence(fm, image, fm.roi_from_detection(faces[0]))
    if ev.presence < PRESENCE_MIN:
        raise Morph4DError(f"{what}: the face landmarks could not be placed (face presence {ev.presence:.2f} < "
                           f"{PRESENCE_MIN}); expected an unoccluded face")
    return ev, faces[0], len(faces)


def observe_frame(fm: FaceModels, image: np.ndarray, previous: FrameEvidence | None) -> FrameEvidence | None:
    """Evidence of one video frame, tracking from the previous frame's landmarks; None when no face is found."""
    if previous is not None:
        ev = _evidence(fm, image, previous.roi)
        if ev.presence >= PRESENCE_MIN:
            return ev
    faces = fm.detect(image)
    if not faces:
        return None
    ev = _evidence(fm, image, fm.roi_from_detection(faces[0]))
    return ev if ev.presence >= PRESENCE_MIN else None


def to_observations(evidence: list[FrameEvidence], width: int, height: int) -> "Observations":
    """Stack frames' evidence into ``Observations`` (what ``fit`` fits)."""
    lm = torch.as_tensor(np.stack([e.landmarks[:, :2] for e in evidence]), dtype=torch.float32)
    iris = torch.as_tensor(np.stack([e.irises[:, 0] for e in evidence]), dtype=torch.float32)
    openness = torch.as_tensor(np.stack([e.openness for e in evidence]), dtype=torch.float32)
    return Observations(lm, iris, openness, width, height)
