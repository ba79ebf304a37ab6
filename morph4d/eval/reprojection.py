"""RE: 3D consistency of generated multi-view frames as a reprojection error (MVP4D S3.1, "RE@LG", after
Kant et al. 2025).

MVP4D: "we select four camera pairs per sequence based on angular proximity. Then, for each evaluation
timestep, we detect DISK keypoints in all generated views [...] use LightGlue to match keypoints between camera
pairs. Each matched keypoint is triangulated using known camera poses and intrinsics and projected to both
views. The error between the reprojected triangulated point and the 2D keypoint positions is averaged across
all matches, frames, and timesteps."

Ours ("RE@SIFT"): DISK and LightGlue need weights no package ships, so keypoints are OpenCV's SIFT (offline,
in opencv-python-headless) matched by mutual nearest neighbours with Lowe's ratio test (0.7); frames smaller
than ``MIN_SIDE`` are upsampled first (SIFT finds almost nothing on a 64 px face) and errors are reported in
pixels of the images as given. SIFT's wrong matches (repeated skin / hair texture) make the paper's mean
heavy-tailed even on exact ground truth (128 px renders: median 0.1-0.5 px, mean 2-3 px), so the median over
matches is reported beside it. Triangulation: linear (DLT) with the known cameras, then reprojection into
both views; points behind either camera are dropped. Views whose images are identical up to the geometry
give near-zero error; view-inconsistent content gives large errors.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from morph4d.cameras import Cameras, angular_distance

MIN_SIDE = 256
RATIO = 0.7
PAIRS = 4


def camera_pairs(cameras: Cameras, centre: torch.Tensor, count: int = PAIRS) -> list[tuple[int, int]]:
    """The ``count`` pairs of distinct views closest in angle as seen from ``centre`` (the head), each view
    pair once, nearest first."""
    from morph4d.eval.inputs import view_angles
    az, el = view_angles(cameras, centre)
    V = len(cameras)
    pairs = [(float(angular_distance(az[i], el[i], az[j], el[j])), i, j) for i in range(V) for j in range(i + 1, V)]
    return [(i, j) for _, i, j in sorted(pairs)[:count]]


def _keypoints(sift, image: np.ndarray, up: float):
    gray = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    if up != 1:
        gray = cv2.resize(gray, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
    kp, desc = sift.detectAndCompute(gray, None)
    pts = np.array([k.pt for k in kp], np.float64).reshape(-1, 2) / up     # OpenCV pixel centres are at +0.5 ...
    return pts + 0.5 * (1 - 1 / up), desc                                  # ... of the upsampled image


def _matches(d1, d2) -> np.ndarray:
    if d1 is None or d2 is None or len(d1) < 2 or len(d2) < 2:
        return np.zeros((0, 2), np.int64)
    bf = cv2.BFMatcher(cv2.NORM_L2)
    fwd = bf.knnMatch(d1, d2, k=2)
    back = {m.queryIdx: m.trainIdx for m in bf.match(d2, d1)}
    keep = [(m.queryIdx, m.trainIdx) for m, n in (p for p in fwd if len(p) == 2)
            if m.distance < RATIO * n.distance and back.get(m.trainIdx) == m.queryIdx]
    return np.array(keep, np.int64).reshape(-1, 2)


def triangulate(P1: np.ndarray, P2: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation of matches ``x1``, ``x2`` (N, 2) under 3x4 projections -> (N, 3)."""
    A = np.stack([x1[:, :1] * P1[2] - P1[0], x1[:, 1:] * P1[2] - P1[1],
                  x2[:, :1] * P2[2] - P2[0], x2[:, 1:] * P2[2] - P2[1]], 1)               # (N, 4, 4)
    X = np.linalg.svd(A)[2][:, -1]
    return X[:, :3] / X[:, 3:]


def pair_errors(images1: np.ndarray, images2: np.ndarray, cam1: Cameras, cam2: Cameras) -> list[np.ndarray]:
    """Per frame, the reprojection errors (pixels) of every match between view 1 and view 2: (F, H, W, 3) each."""
    sift = cv2.SIFT_create()
    up = max(1.0, MIN_SIDE / min(images1.shape[1:3]))
    P = [(c.K[0] @ torch.cat([c.R[0], c.t[0][:, None]], 1)).double().numpy() for c in (cam1, cam2)]
    out = []
    for a, b in zip(images1, images2):
        (p1, d1), (p2, d2) = _keypoints(sift, a, up), _keypoints(sift, b, up)
        m = _matches(d1, d2)
        if not len(m):
            out.append(np.zeros(0))
            continue
        x1, x2 = p1[m[:, 0]], p2[m[:, 1]]
        X = np.concatenate([triangulate(P[0], P[1], x1, x2), np.ones((len(m), 1))], 1)
        errs, front = [], np.ones(len(m), bool)
        for Pk, xk in ((P[0], x1), (P[1], x2)):
            y = X @ Pk.T
            front &= y[:, 2] > 1e-6
            errs.append(np.linalg.norm(y[:, :2] / np.where(np.abs(y[:, 2:]) > 1e-9, y[:, 2:], 1e-9) - xk, axis=1))
        out.append(((errs[0] + errs[1]) / 2)[front])
    return out


def reprojection_error(video: torch.Tensor, cameras: Cameras, centre: torch.Tensor, pairs: int = PAIRS) -> dict:
    """RE of a (V, F, 3, H, W) multi-view video: {"re": mean px over all matches, "re_median", "per_frame": [F] (NaN: no
    match), "matches": total, "pairs": [(i, j)]}."""
    if len(cameras) < 2:
        return {"re": math.nan, "re_median": math.nan, "per_frame": [math.nan] * video.shape[1], "matches": 0,
                "pairs": []}
    imgs = video.permute(0, 1, 3, 4, 2).float().numpy()
    chosen = camera_pairs(cameras, centre, pairs)
    frames: list[list[np.ndarray]] = [[] for _ in range(video.shape[1])]
    for i, j in chosen:
        for f, e in enumerate(pair_errors(imgs[i], imgs[j], cameras[[i]], cameras[[j]])):
            frames[f].append(e)
    per_frame = [np.concatenate(e) for e in frames]
    allm = np.concatenate(per_frame)
    return {"re": float(allm.mean()) if len(allm) else math.nan,
            "re_median": float(np.median(allm)) if len(allm) else math.nan,
            "per_frame": [float(e.mean()) if len(e) else math.nan for e in per_frame],
            "matches": int(len(allm)), "pairs": [list(p) for p in chosen]}


__all__ = ["MIN_SIDE", "PAIRS", "camera_pairs", "triangulate", "pair_errors", "reprojection_error"]
