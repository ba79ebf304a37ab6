"""A driving video -> an animation (MVP4D §3: "an animation, e.g. tracked from a driving video"; IM-Portrait
tracks a 3DMM per frame the same way).

1. ``read_video``: frames decoded one by one (PyAV, bundled FFmpeg), reduced to ``VIDEO_SIDE`` px on the longer
   side while decoding; an unreadable container, an unknown codec or a video without frames is refused.
2. evidence per frame: the face mesh follows the previous frame's landmarks (detector only when lost).
3. identity from the whole clip: shape and focal length fitted jointly on up to ``KEYFRAMES`` frames spread
   over the clip, then fixed.
4. per-frame fits of expression, jaw, eyes and head pose, all frames at once (batched Levenberg-Marquardt).
5. zero-lag temporal smoothing (ours): minimise sum_t (x_t - x*_t)^T H_t (x_t - x*_t) + l sum_t |x_{t+1} - 2 x_t +
   x_{t-1}|^2, with x*_t and H_t = J^T J each frame's fit and its Gauss-Newton matrix (conjugate gradients).
   The penalty is symmetric in time, so nothing trails fast motion; it smooths most what a frame's landmarks
   constrain least (depth, gaze), and frames without a face are filled in from their neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel
from morph4d.heads.animation import Animation
from morph4d.tracking.detect import FaceModels
from morph4d.tracking.embedding import LandmarkEmbedding
from morph4d.tracking.fit import (
    PER_FRAME,
    FitConfig,
    LandmarkHead,
    Observations,
    Track,
    _Energy,
    _frame_sizes,
    _lm_frames,
    _start,
    _to_params,
    fit_landmarks,
)
from morph4d.tracking.observe import FrameEvidence, observe_frame, to_observations
from morph4d.validate import input_file

VIDEO_SIDE = 720        # frames are tracked at most this large (longer side)
KEYFRAMES = 8
MAX_VIDEO_FRAMES = 20_000


def read_video(path, max_frames: int | None = None, what: str = "video") -> tuple[list[np.ndarray], float]:
    """Decode ``path`` to float32 RGB frames in [0, 1] (reduced to ``VIDEO_SIDE``) and its frame rate."""
    import av

    path = input_file(path, what)
    limit = min(max_frames or MAX_VIDEO_FRAMES, MAX_VIDEO_FRAMES)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise Morph4DError(f"{what} {path} has no video stream; expected a video file (MP4, MOV, MKV, "
                                   f"WebM, ...)")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.base_rate or 25.0)
            for frame in container.decode(stream):
                w, h = frame.width, frame.height
                s = min(1.0, VIDEO_SIDE / max(w, h))
                if s < 1:
                    frame = frame.reformat(width=max(2, round(w * s / 2) * 2), height=max(2, round(h * s / 2) * 2))
                frames.append(frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0)
                if len(frames) >= limit:
                    break
    except Morph4DError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise Morph4DError(f"{what} {path} could not be decoded ({type(e).__name__}: {e}); expected a video FFmpeg "
                           f"reads (MP4/H.264, MOV, MKV, WebM, ...)") from None
    if not frames:
        raise Morph4DError(f"{what} {path} has no frames")
    if not 0 < fps <= 1000:
        fps = 25.0
    return frames, fps


@dataclass
class TrackedVideo:
    animation: Animation
    track: Track
    evidence: list[FrameEvidence | None]
    found: np.ndarray          # (F,) bool: a face was tracked in the frame
    width: int
    height: int


def smooth_frames(V: torch.Tensor, H: torch.Tensor, found: torch.Tensor, weight: float, scale: torch.Tensor,
                  iterations: int = 200) -> torch.Tensor:
    """Zero-lag smoothing of per-frame unknowns ``V`` (F, P) (module docstring, step 5) by conjugate gradients.
    ``H`` (F, P, P) each frame's Gauss-Newton matrix, ``found`` (F,) frames with data, ``scale`` (P,) the units
    of each unknown in the acceleration penalty."""
    F, P = V.shape
    if F < 3:
        return V
    Hm = H * found[:, None, None].to(H.dtype) + 1e-6 * torch.eye(P, dtype=H.dtype)
    Vd = V.to(H.dtype)
    s2 = (scale.to(H.dtype) ** 2)

    def d2t_d2(x):  # D2^T D2 x along time, per unknown
        d = x[2:] - 2 * x[1:-1] + x[:-2]
        out = torch.zeros_like(x)
        out[2:] += d
        out[1:-1] -= 2 * d
        out[:-2] += d
        return out

    def A(x):
        return (Hm @ x[..., None])[..., 0] + weight * s2 * d2t_d2(x)

    b = (Hm @ Vd[..., None])[..., 0]
    x = Vd.clone()
    r = b - A(x)
    p = r.clone()
    rr = (r * r).sum()
    for _ in range(iterations):
        Ap = A(p)
        alpha = rr / (p * Ap).sum().clamp(min=1e-30)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = (r * r).sum()
        if rr_new.sqrt() < 1e-8 * b.norm().clamp(min=1e-30):
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x.to(V.dtype)


def track_video(frames: list[np.ndarray], fps: float, model: HeadModel, emb: LandmarkEmbedding, fm: FaceModels,
                cfg: FitConfig = FitConfig(), what: str = "video", log=print, focal: float | None = None,
                shape: torch.Tensor | None = None) -> TrackedVideo:
    """Track a clip (module docstring) into an ``Animation`` with the clip's identity (shape) attached.
    ``focal`` (pixels) known: kept, not searched; ``shape`` known too (with ``focal``): the keyframe identity
    fit is skipped and only the per-frame parameters are fitted (``morph4d eval`` tracks predictions so, with
    the ground truth's identity)."""
    if shape is not None and focal is None:
        raise ValueError("track_video: a known shape needs the focal length it was fitted with")
    head = LandmarkHead(model, emb)
    H, W = frames[0].shape[:2]
    evidence: list[FrameEvidence | None] = []
    prev = None
    for image in frames:
        ev = observe_frame(fm, image, prev)
        evidence.append(ev)
        prev = ev
    found = np.array([e is not None for e in evidence])
    if not found.any():
        raise Morph4DError(f"{what}: no face found in any of its {len(frames)} frames; expected a video of one face")
    idx = np.nonzero(found)[0]
    log(f"[track] face in {len(idx)}/{len(frames)} frames")
    # fill frames without a face with the nearest tracked frame's evidence (weight 0 below)
    filled = [evidence[i] if found[i] else evidence[idx[np.abs(idx - i).argmin()]] for i in range(len(frames))]
    obs_all = to_observations(filled, W, H)
    # 3. identity: shape + focal on keyframes
    keys = idx[np.linspace(0, len(idx) - 1, min(KEYFRAMES, len(idx))).round().astype(int)]
    keys = np.unique(keys)
    key_obs = Observations(obs_all.landmarks[keys], obs_all.irises[keys], obs_all.openness[keys], W, H)
    first = Observations(key_obs.landmarks[:1], key_obs.irises[:1], key_obs.openness[:1], W, H)
    if shape is None and focal is None:
        start = fit_landmarks(model, emb, first, cfg, head=head)      # focal candidates on one frame
        identity = fit_landmarks(model, emb, key_obs, replace(cfg, iterations=10), head=head, focal_start=start.focal)
        shape, focal = identity.params.shape.reshape(-1), identity.focal
    elif shape is None:
        shape = fit_landmarks(model, emb, key_obs, cfg, head=head, focal=focal).params.shape.reshape(-1)
    else:
        shape = shape.reshape(-1)
    # 4. every frame, batched
    energy = _Energy(head, obs_all, emb, cfg, focal)
    shared = torch.cat([shape, torch.tensor([float(np.log(focal))])])
    V = _start(head, emb, obs_all, shape, focal)
    V, Hmat = _lm_frames(energy, V, shared, cfg.frame_iterations)
    # 5. zero-lag smoothing
    scale = torch.cat([torch.full((n,), 10.0 if k == "translation" else 1.0)
                       for k, n in zip(PER_FRAME, _frame_sizes(head))])
    V = smooth_frames(V, Hmat, torch.as_tensor(found), cfg.time_weight, scale)
    params = _to_params(head, V, shape)
    anim = Animation(params.replace(shape=shape), fps, model.name, "tracked")
    return TrackedVideo(anim, Track(params, focal, float("nan")), evidence, found, W, H)
