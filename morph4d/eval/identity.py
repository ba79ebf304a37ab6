"""CSIM: identity preservation as the cosine similarity of face-recognition embeddings of the predicted and the
ground-truth face (MVP4D Tables 4/5, S9, after Deng et al. 2019's ArcFace).

ArcFace's weights ship in no package, so the embedding here is dlib's face-recognition ResNet (128-D, 99.4% on
LFW), whose weights ship in the PyPI package face-recognition-models 0.3.0 and which dlib-bin runs offline on
the CPU (~75 ms per face). The .dat files are located without importing ``face_recognition_models`` (its
``__init__`` needs pkg_resources). dlib's descriptors are not zero-centred, so cosines of different people are
high too (0.80-0.83 between photos of different people, 0.95-0.97 of one person; 0.93-0.97 between
our held-out synthetic identities, whose faces are alike; ArcFace's are ~0 apart): CSIM values compare runs
with each other here, not with the paper's numbers.

Faces: every ``STRIDE``-th frame's crops (``protocol``, unmasked) are resized to ``SIDE`` px; dlib's HOG
detector finds the face on the ground truth; the prediction uses its own detection, or the ground truth's box
where it has none (the crops share their geometry), so a blurry prediction is scored instead of skipped. No face
on the ground truth: NaN.
The 5-point landmarks align the face chip (dlib's standard 150 px chip) before the embedding.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from morph4d.errors import Morph4DError

SIDE = 256
STRIDE = 3   # every 3rd frame is scored (as AKD / AED): ~90 ms per face embedding here; identity does not change
             # between neighbouring frames, so the mean over a third of the frames estimates the mean over all
MODELS = ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat")


def model_folder() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(loc) / "models"
        if all((folder / m).is_file() for m in MODELS):
            return folder
    raise Morph4DError("CSIM needs dlib's face-recognition weights from the package face-recognition-models==0.3.0 "
                       "(pip install face-recognition-models==0.3.0 dlib-bin==20.0.1.post1), or leave csim out of "
                       "--metrics")


class CSIM:
    def __init__(self):
        folder = model_folder()
        import dlib
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(folder / MODELS[1]))
        self.net = dlib.face_recognition_model_v1(str(folder / MODELS[0]))

    def _images(self, video: torch.Tensor) -> list[np.ndarray]:
        x = F.interpolate(video.float().clamp(0, 1), size=(SIDE, SIDE), mode="bilinear", antialias=True,
                          align_corners=False)
        return [np.ascontiguousarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in x]

    def _face(self, image: np.ndarray):
        """The most confident face (not the largest): HOG at the crop's own size first (a protocol crop's face is
        ~150 px at ``SIDE``), then upsampled once (HOG misses faces under ~80 px)."""
        for upsample in (0, 1):
            faces, scores, _ = self.detector.run(image, upsample, 0.0)
            if len(faces):
                return faces[int(np.argmax(scores))]
        return None

    def _embed(self, image: np.ndarray, box) -> np.ndarray:
        shape = self.landmarks(image, box)
        return np.array(self.net.compute_face_descriptor(image, shape, 0))

    def faces(self, truth: torch.Tensor) -> list:
        """Per frame of ground-truth crops ``(F, 3, H, W)``: (face box, embedding), or None without a face.
        Computed once per view and reused for every run."""
        out = []
        for f, t in enumerate(self._images(truth)):
            box = self._face(t) if f % STRIDE == 0 else None
            out.append(None if box is None else (box, self._embed(t, box)))
        return out

    def similarity(self, pred: torch.Tensor, truth) -> list[float]:
        """Per frame CSIM of ``(F, 3, H, W)`` crops in [0, 1] against the ground truth's crops (or their
        ``faces``); NaN where the ground truth shows no face and off the ``STRIDE`` grid."""
        ref = truth if isinstance(truth, list) else self.faces(truth)
        keep = [f for f, r in enumerate(ref) if r is not None]
        out = [math.nan] * len(ref)
        for f, p in zip(keep, self._images(pred[keep]) if keep else []):
            box, b = ref[f]
            a = self._embed(p, self._face(p) or box)
            out[f] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        return out


__all__ = ["SIDE", "STRIDE", "MODELS", "model_folder", "CSIM"]
