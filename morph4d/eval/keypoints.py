"""AKD and AED: expression transfer accuracy (MVP4D S3.1 "Metrics", Table S9; after FOMM / DECA).

* **AKD**, average keypoint distance: the mean 2D distance between facial landmarks detected on the
  predicted and on the ground-truth frame (MVP4D: Bulat & Tzimiropoulos' 68-point FAN). Ours: the 468 face-mesh
  landmarks of our tracker (``morph4d.tracking``: MediaPipe's face mesh, shipped in a package, offline), in
  pixels of the crop resized to ``SIDE`` = 256 px, so that numbers compare across resolutions.
* **AED**, average expression distance: the distance between the expressions a 3DMM tracker recovers from
  the predicted and from the ground-truth frame (MVP4D: DECA's expression coefficients, L1). Ours: our tracker
  fits the head model to each view's ground-truth crops as a video (identity on its keyframes, per-frame
  expression, jaw, eyes, pose), with the crop camera's known focal length; the prediction's crops are fitted
  per frame with that identity and focal kept, so the distance measures expression, not identity (and the
  identity fit runs once per view, not once per run). The distance is the mean 3D distance (mm) between the
  expression + jaw offsets of the face vertices (the mesh before the global transform minus its neutral),
  which does not depend on how a head model scales its expression basis (DECA's L1 does).

Both are computed per view on every ``STRIDE``-th frame on the unmasked crops (``protocol``), only where the
tracker finds the face in both images; the counts travel with the numbers (back and far-side views have no face
to find).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from morph4d.heads import HeadModel, HeadParams
from morph4d.tracking.accuracy import face_vertices
from morph4d.tracking.detect import FaceModels
from morph4d.tracking.embedding import LandmarkEmbedding
from morph4d.tracking.video import TrackedVideo, track_video

SIDE = 256   # crops are resized to this many pixels before the tracker sees them (and AKD is in its pixels)
STRIDE = 3   # every 3rd frame is tracked (as a clip at fps / 3): the tracker is ~4 frames/s on eval crops here


@dataclass
class FaceTrack:
    """A view's crops, tracked: landmarks (F, 468, 2) in ``SIDE`` pixels, found (F,), expression offsets of the
    face vertices (F, n, 3) in metres (NaN where not found)."""
    landmarks: np.ndarray
    found: np.ndarray
    offsets: torch.Tensor
    shape: torch.Tensor | None = None   # the identity the tracker fitted (None: no face in any frame)


class ExpressionTracker:
    """The tracker run on evaluation crops; one instance per ``morph4d eval`` (networks loaded once)."""

    def __init__(self, model: HeadModel, embedding: LandmarkEmbedding, face_models: FaceModels | None = None):
        self.model, self.embedding = model, embedding
        self.fm = face_models or FaceModels()
        self.face = face_vertices(model)

    def track(self, video: torch.Tensor, fps: float, focal: float | None = None,
              shape: torch.Tensor | None = None) -> FaceTrack:
        """``video`` (F, 3, s, s) crops in [0, 1] -> ``FaceTrack`` (frames off the ``STRIDE`` grid: not found).
        ``focal``: the crop camera's focal length in pixels at ``SIDE`` (known for evaluation crops); ``shape``:
        the identity to keep (the ground truth's, when a prediction is tracked)."""
        n = video.shape[0]
        keep = np.arange(0, n, STRIDE)
        frames = F.interpolate(video[keep].float().clamp(0, 1), size=(SIDE, SIDE), mode="bilinear", antialias=True,
                               align_corners=False).permute(0, 2, 3, 1).numpy()
        empty = FaceTrack(np.full((n, 468, 2), np.nan), np.zeros(n, bool),
                          torch.full((n, len(self.face), 3), float("nan")))
        try:
            tv: TrackedVideo = track_video(list(frames), fps / STRIDE, self.model, self.embedding, self.fm,
                                           what="evaluation crop", log=lambda *a: None, focal=focal, shape=shape)
        except ValueError:          # Morph4DError: no face in any frame (a back view)
            return empty
        p: HeadParams = tv.track.params.expand_shape()
        with torch.no_grad():
            off = (self.model(p, apply_global=False) - self.model.neutral(p.shape[0]))[:, self.face]
        for i, (k, e) in enumerate(zip(keep, tv.evidence)):
            if e is not None:
                empty.landmarks[k] = e.landmarks[:, :2]
                empty.found[k] = True
                empty.offsets[k] = off[i]
        empty.shape = tv.track.params.shape.reshape(-1)
        return empty


def akd_aed(pred: FaceTrack, truth: FaceTrack) -> dict:
    """Per frame AKD (px at ``SIDE``) and AED (mm) where both found a face: {"akd": [F], "aed": [F], "frames": n}
    (NaN in the lists where either image had no face)."""
    both = pred.found & truth.found
    akd = np.linalg.norm(pred.landmarks - truth.landmarks, axis=-1).mean(-1)
    aed = ((pred.offsets - truth.offsets).norm(dim=-1).mean(-1) * 1000).numpy()
    akd[~both], aed[~both] = np.nan, np.nan
    return {"akd": akd.tolist(), "aed": aed.tolist(), "frames": int(both.sum())}


__all__ = ["SIDE", "FaceTrack", "ExpressionTracker", "akd_aed"]
