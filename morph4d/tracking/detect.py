"""Face detection, dense face landmarks, irises and a person matte from models that ship in a PyPI package.

The networks are Google's MediaPipe models (Apache-2.0) as they come inside the ``mediapipe==0.10.21`` wheel,
the last line whose wheel carries the legacy face models (REFERENCE.md §5): BlazeFace short/full range
(face boxes + 6 keypoints), the face mesh (468 landmarks with relative depth), the iris model (5 iris points +
71 eye-contour points per eye) and the selfie segmenter (person incl. hair). Only the ``.tflite`` files are
used, run by the LiteRT interpreter (``ai-edge-litert``); mediapipe's own Python package is never imported,
so its declared dependencies (jax, opencv-contrib, matplotlib, sounddevice) are not needed and the Makefile
installs the wheel with ``--no-deps``. Nothing is ever downloaded.

The pre/post-processing is ours, written from the model cards and the graph settings (anchor layout, crop
scales, value ranges); those facts are cited where used. Images here are ``numpy`` float32 ``(H, W, 3)`` RGB
in [0, 1]; points are pixels with centres at +0.5 (CONVENTIONS.md).
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from morph4d.errors import Morph4DError

MEDIAPIPE_VERSION = "0.10.21"
MODELS_ENV = "MORPH4D_FACE_MODELS"
MODEL_FILES = {
    "detector": "face_detection/face_detection_short_range.tflite",
    "detector_full": "face_detection/face_detection_full_range_sparse.tflite",
    "mesh": "face_landmark/face_landmark.tflite",
    "iris": "iris_landmark/iris_landmark.tflite",
    "segmenter": "selfie_segmentation/selfie_segmentation.tflite",
}
INSTALL_HINT = (f"install the models with `pip install --no-deps mediapipe=={MEDIAPIPE_VERSION}` (the Makefile does; "
                f"only its .tflite files are read), or point {MODELS_ENV} at a folder holding "
                f"{', '.join(sorted(set(MODEL_FILES.values())))}")

# MediaPipe face-mesh indices used by the ROI and eye logic (the model's topology, fixed by the model).
EYE_CORNERS = {"image_left": (33, 133), "image_right": (362, 263)}  # outer/inner corners, left to right in the image
NUM_MESH_LANDMARKS = 468


def models_dir() -> Path:
    """The folder holding the MediaPipe ``modules/`` tree: ``$MORPH4D_FACE_MODELS`` or the installed wheel
    (located without importing it)."""
    env = os.environ.get(MODELS_ENV)
    if env:
        root = Path(env)
    else:
        spec = importlib.util.find_spec("mediapipe")
        if spec is None or spec.origin is None:
            raise Morph4DError(f"the face models are not installed; {INSTALL_HINT}")
        root = Path(spec.origin).parent / "modules"
    missing = [rel for rel in MODEL_FILES.values()
               if not (root / rel).is_file() and not (root / Path(rel).name).is_file()]
    if missing:
        raise Morph4DError(f"face model files missing under {root}: {missing}; {INSTALL_HINT}")
    return root


def _model_path(root: Path, key: str) -> Path:
    rel = Path(MODEL_FILES[key])
    return root / rel if (root / rel).is_file() else root / rel.name


class _Net:
    """One LiteRT interpreter: float32 NHWC input, outputs in the model's order."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.size = int(self.input["shape"][1])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(x[None], dtype=np.float32))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(o["index"])[0] for o in self.outputs]


@dataclass
class Detection:
    box: np.ndarray        # (4,) x0, y0, x1, y1 in pixels
    keypoints: np.ndarray  # (6, 2): image-left eye, image-right eye, nose tip, mouth, image-left ear, image-right ear
    score: float

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


@dataclass
class Roi:
    """A rotated square region: centre (pixels), side (pixels), angle (radians, the ROI's x axis in the image)."""
    cx: float
    cy: float
    size: float
    angle: float

    def matrix(self, out: int) -> np.ndarray:
        """2x3 affine from output crop pixels (0..out) to image pixels (OpenCV's integer-centred coordinates are
        handled by the -0.5 shifts)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.size / out
        A = np.array([[c * k, -s * k], [s * k, c * k]])
        centre = np.array([self.cx, self.cy])
        # image point (+0.5 convention) of crop point q (+0.5 convention): centre + A (q - out/2)
        b = centre - A @ np.array([out / 2, out / 2])
        # OpenCV sample positions are integer-centred on both sides: u_cv = u - 0.5
        b = b + A @ np.array([0.5, 0.5]) - 0.5
        return np.concatenate([A, b[:, None]], 1)

    def crop(self, image: np.ndarray, out: int, flip: bool = False) -> np.ndarray:
        M = self.matrix(out)
        if flip:  # sample the crop mirrored left-right: crop column j reads column out-1-j
            M = M @ np.array([[-1.0, 0, out - 1], [0, 1, 0], [0, 0, 1]])
        return cv2.warpAffine(image, M, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def to_image(self, pts: np.ndarray, out: int) -> np.ndarray:
        """Crop pixel coordinates (+0.5 convention, x, y[, z]) -> image pixels; z scales like x."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.size / out
        q = (pts[:, :2] - out / 2) * k
        xy = np.stack([self.cx + c * q[:, 0] - s * q[:, 1], self.cy + s * q[:, 0] + c * q[:, 1]], 1)
        return np.concatenate([xy, pts[:, 2:] * k], 1)


def _anchors(size: int, strides: tuple[int, ...], per_layer: int) -> np.ndarray:
    """SSD anchor centres (normalised) of MediaPipe's SsdAnchorsCalculator with fixed anchor size: layers of
    equal stride share one grid, ``per_layer`` anchors per cell and layer (BlazeFace short range: 2)."""
    out, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        g = math.ceil(size / strides[i])
        ys, xs = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(cells, per_layer * (j - i), axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


# BlazeFace settings (face_detection_short_range_common / full_range graphs): input side, anchor strides,
# anchors per layer, score threshold. Raw boxes are in input pixels relative to the anchor centre.
DETECTORS = {"detector": (128, (8, 16, 16, 16), 2, 0.5), "detector_full": (192, (4,), 1, 0.6)}


def _letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, int, int]:
    """Fit ``image`` into a ``size`` square (aspect kept, zero padding centred): (tensor, pad x, pad y)."""
    H, W = image.shape[:2]
    s = size / max(H, W)
    w, h = max(1, round(W * s)), max(1, round(H * s))
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size, size, 3), np.float32)
    px, py = (size - w) // 2, (size - h) // 2
    canvas[py:py + h, px:px + w] = small
    return canvas, px, py


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


class FaceModels:
    """The four MediaPipe networks, loaded once (lazily) per process."""

    def __init__(self, threads: int | None = None):
        import torch

        self.root = models_dir()
        self.threads = threads or max(1, torch.get_num_threads())
        self._nets: dict[str, _Net] = {}

    def net(self, key: str) -> _Net:
        if key not in self._nets:
            self._nets[key] = _Net(_model_path(self.root, key), self.threads)
        return self._nets[key]

    # -- detection --------------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image``, largest first: the short-range BlazeFace (faces within ~2 m) and the full-range one
        (smaller faces), merged (a face both find is kept once, the short-range box)."""
        found = self._detect(image, "detector")
        for d in self._detect(image, "detector_full"):
            if not found or _iou(d.box, np.stack([f.box for f in found])).max() < 0.3:
                found.append(d)
        return sorted(found, key=lambda d: -d.area)

    def _detect(self, image: np.ndarray, key: str) -> list[Detection]:
        size, strides, per_layer, threshold = DETECTORS[key]
        H, W = image.shape[:2]
        x, px, py = _letterbox(image, size)
        raw, logits = self.net(key)(x * 2 - 1)  # BlazeFace takes [-1, 1]
        anchors = _anchors(size, strides, per_layer)
        score = 1 / (1 + np.exp(-np.clip(logits[:, 0], -80, 80)))  # float32 exp overflows past 88
        keep = np.nonzero(score >= threshold)[0]
        if keep.size == 0:
            return []
        raw, anchors, score = raw[keep], anchors[keep], score[keep]
        centre = raw[:, :2] / size + anchors
        half = raw[:, 2:4] / size / 2
        boxes = np.concatenate([centre - half, centre + half], 1) * size
        kps = (raw[:, 4:16].reshape(-1, 6, 2) / size + anchors[:, None]) * size
        # letterbox -> image pixels
        s = max(H, W) / size
        shift = np.array([px, py], np.float32)
        boxes = ((boxes.reshape(-1, 2, 2) - shift) * s).reshape(-1, 4)
        kps = (kps - shift) * s
        # weighted non-maximum suppression (MediaPipe's "WEIGHTED" NMS at IoU 0.3)
        order = np.argsort(-score)
        done = np.zeros(len(order), bool)
        out = []
        for i in order:
            if done[i]:
                continue
            group = np.nonzero((_iou(boxes[i], boxes) > 0.3) & ~done)[0]
            done[group] = True
            w = score[group] / score[group].sum()
            out.append(Detection((boxes[group] * w[:, None]).sum(0), (kps[group] * w[:, None, None]).sum(0),
                                 float(score[i])))
        return out

    # -- landmarks --------------------------------------------------------------------------------------
    @staticmethod
    def roi_from_detection(d: Detection) -> Roi:
        """The face-mesh crop from a detection (face_detection_front_detection_to_roi: rotation from the two eye
        keypoints, the box scaled 1.5x, square on its longer side)."""
        e = d.keypoints[1] - d.keypoints[0]
        w, h = d.box[2] - d.box[0], d.box[3] - d.box[1]
        return Roi(float((d.box[0] + d.box[2]) / 2), float((d.box[1] + d.box[3]) / 2), float(max(w, h) * 1.5),
                   math.atan2(e[1], e[0]))

    @staticmethod
    def roi_from_landmarks(pts: np.ndarray) -> Roi:
        """The next frame's crop from this frame's landmarks (face_landmark_landmarks_to_roi: rotation from the
        eye corners 33 -> 263, the landmarks' box in that rotated frame scaled 1.5x, square)."""
        e = pts[263, :2] - pts[33, :2]
        a = math.atan2(e[1], e[0])
        c, s = math.cos(a), math.sin(a)
        local = pts[:, :2] @ np.array([[c, -s], [s, c]])  # coordinates along the ROI's axes
        lo, hi = local.min(0), local.max(0)
        mid = (lo + hi) / 2
        centre = np.array([[c, -s], [s, c]]) @ mid
        return Roi(float(centre[0]), float(centre[1]), float((hi - lo).max() * 1.5), a)

    def mesh(self, image: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """468 face-mesh landmarks (x, y in image pixels, z relative depth in pixels) and the face presence."""
        net = self.net("mesh")
        raw, flag = net(roi.crop(image, net.size))  # input in [0, 1] (face_landmark graph)
        pts = raw.reshape(-1, 3)[:NUM_MESH_LANDMARKS]
        presence = float(1 / (1 + math.exp(-float(np.clip(flag.ravel()[0], -50, 50)))))
        return roi.to_image(pts, net.size), presence

    def irises(self, image: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Iris centres and 4 rim points per eye, ``(2, 5, 2)`` in pixels, image-left eye first. The model sees
        one eye at a time, image-left orientation; the image-right eye is mirrored in and out (iris graph)."""
        net = self.net("iris")
        out = []
        for side, (a, b) in EYE_CORNERS.items():
            pa, pb = pts[a, :2], pts[b, :2]
            e = pb - pa
            roi = Roi(float((pa[0] + pb[0]) / 2), float((pa[1] + pb[1]) / 2), float(np.linalg.norm(e) * 2.3),
                      math.atan2(e[1], e[0]))
            flip = side == "image_right"
            _, iris = net(roi.crop(image, net.size, flip=flip))
            q = iris.reshape(5, 3).copy()
            if flip:
                q[:, 0] = net.size - q[:, 0]
            out.append(roi.to_image(q, net.size)[:, :2])
        return np.stack(out)

    # -- matting ----------------------------------------------------------------------------------------
    def person_matte(self, image: np.ndarray) -> np.ndarray:
        """Soft person matte (head, hair, shoulders) ``(H, W)`` in [0, 1] from the selfie segmenter (256 px input
        in [0, 1], sigmoid output), resized back bilinearly."""
        net = self.net("segmenter")
        H, W = image.shape[:2]
        x = cv2.resize(image, (net.size, net.size), interpolation=cv2.INTER_AREA)
        mask = net(x)[0][..., 0]
        return np.clip(cv2.resize(mask, (W, H), interpolation=cv2.INTER_LINEAR), 0, 1)
