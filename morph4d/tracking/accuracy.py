"""Tracking accuracy on synthetic renders with exact ground truth (issue 16 §5).

Held-out identities (``identity.EVAL_SEEDS``: never seen by training or by the embedding's calibration) are
rendered at 512 px with a random expression, jaw and gaze, from a camera at a chosen yaw (and a small random
pitch) and vertical field of view; the photo tracker runs on the render; its result is compared with the
truth in the camera's frame:

* 2D landmark error: the embedding's points of the fitted mesh vs those of the true mesh, projected by each
  one's camera, in pixels and as a fraction of the inter-ocular distance (NME);
* head-pose error: the angle of R_fit^T R_true, both head-to-camera rotations, degrees;
* 3D vertex error: the face vertices (skin in front of the ears, above the chin: ``face_vertices``) in camera
  coordinates, after the similarity transform that best aligns fit to truth (Umeyama), mean distance in mm;
* expression error: the expression + jaw offsets of the face vertices (the mesh before the global transform
  minus its neutral), fit vs truth, mean distance in mm;
* focal error: |f_fit / f_true - 1|;
* the detector's bound on the pose: the head pose a perspective-n-point solve finds from the detected
  landmarks against the embedding's points on the TRUE mesh (true shape, expression, camera intrinsics): the
  error left when everything but the landmarks is exact.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from morph4d.heads import HeadModel, HeadParams
from morph4d.heads.model import axis_angle_to_matrix
from morph4d.mesh.align import similarity_transform
from morph4d.tracking.embedding import LandmarkEmbedding, skin_triangles
from morph4d.tracking.fit import CAMERA_R, FitConfig, LandmarkHead, fit_landmarks, project


def face_vertices(model: HeadModel) -> torch.Tensor:
    """Skin vertices of the face: in front of the ears (template z > 0.02 m) and above the chin's underside."""
    skin = torch.zeros(model.num_vertices, dtype=torch.bool)
    skin[model.faces[skin_triangles(model)].reshape(-1)] = True
    t = model.template
    return torch.nonzero(skin & (t[:, 2] > 0.02) & (t[:, 1] > -0.115))[:, 0]


def umeyama(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``src`` (N, 3) mapped onto ``dst`` by the least-squares similarity transform (Umeyama 1991)."""
    s, R, t = similarity_transform(src, dst)
    return s * src @ R.T + t


def rotation_angle_deg(Ra: torch.Tensor, Rb: torch.Tensor) -> float:
    c = ((Ra.T @ Rb).trace() - 1) / 2
    return math.degrees(math.acos(float(c.clamp(-1, 1))))


@dataclass
class CaseResult:
    yaw: float
    fov: float
    landmark_px: float
    landmark_nme: float
    pose_deg: float
    vertex_mm: float
    expression_mm: float
    focal_rel: float
    seconds: float
    pnp_deg: float = math.nan


def synthetic_case(model: HeadModel, k: int, yaw: float, fov: float, res: int = 512):
    """Held-out identity ``k`` rendered at ``yaw`` degrees with a vertical ``fov``: (image (H, W, 3) numpy,
    true params (one frame), true camera)."""
    from morph4d.cameras import orbit_cameras
    from morph4d.data.format import mix_seed, select_frames
    from morph4d.data.identity import EVAL_SEEDS, sample_identity
    from morph4d.data.scene import RenderConfig, make_scene, render_sequence, sample_lighting
    from morph4d.data.synth import random_animation

    seed = EVAL_SEEDS.start + k
    g = torch.Generator().manual_seed(mix_seed("tracking-accuracy", seed * 1000 + int(yaw) + 500 + int(fov)))
    identity = sample_identity(seed, model)
    params, _ = random_animation(model, 1, 25.0, g)
    params = select_frames(params.replace(shape=identity.shape.clone()), [0])
    params = params.replace(rotation=torch.zeros_like(params.rotation), neck=torch.zeros_like(params.neck))
    # the face fills the frame like a portrait: distance from the field of view (head ~0.30 m tall in view)
    radius = 0.30 / (2 * math.tan(math.radians(fov) / 2)) * 1.3
    pitch = float(torch.rand((), generator=g) * 20 - 10)
    cam = orbit_cameras(torch.tensor([yaw]), torch.tensor([pitch]), radius, fov, res, res, target=(0.0, 0.0, 0.0))
    images, _ = render_sequence(make_scene(model, identity, res), params, cam, sample_lighting(g), RenderConfig())
    return images[0, 0].numpy().astype(np.float32), params, cam


def head_to_camera(params: HeadParams, R_cam: torch.Tensor) -> torch.Tensor:
    return R_cam @ axis_angle_to_matrix(params.rotation.reshape(3))


def evaluate_case(model: HeadModel, emb: LandmarkEmbedding, fm, k: int, yaw: float, fov: float,
                  cfg: FitConfig = FitConfig(), res: int = 512, head: LandmarkHead | None = None,
                  known_focal: bool = False) -> CaseResult | None:
    from morph4d.tracking.observe import observe_image, to_observations

    image, truth, cam = synthetic_case(model, k, yaw, fov, res)
    t0 = time.perf_counter()
    try:
        ev, _, _ = observe_image(fm, image, "synthetic render")
    except ValueError:
        return None
    obs = to_observations([ev], res, res)
    track = fit_landmarks(model, emb, obs, cfg, head=head, focal=float(cam.K[0, 1, 1]) if known_focal else None)
    seconds = time.perf_counter() - t0
    fit = track.params
    # camera-frame vertices of both
    v_true = cam.R[0] @ model(truth)[0].T + cam.t[0][:, None]
    v_fit = CAMERA_R @ model(fit)[0].T
    idx = face_vertices(model)
    aligned = umeyama(v_fit.T[idx].double(), v_true.T[idx].double())
    vertex_mm = float((aligned - v_true.T[idx].double()).norm(dim=-1).mean() * 1000)
    # 2D landmarks through each camera
    lm_true = cam.project(emb.points(model(truth)[0], model, yaw)[None])[0, :, :2]
    lm_fit = project(emb.points(model(fit)[0], model, yaw), torch.tensor(track.focal), res / 2, res / 2)
    iod = float((obs.landmarks[0, 33] - obs.landmarks[0, 263]).norm())
    err2d = (lm_fit - lm_true).norm(dim=-1).mean()
    pose = rotation_angle_deg(head_to_camera(fit, CAMERA_R), head_to_camera(truth, cam.R[0]))

    def offsets(p):
        return (model(p, apply_global=False)[0] - model.neutral(p.shape.reshape(-1)))[idx]
    expr_mm = float((offsets(fit) - offsets(truth)).norm(dim=-1).mean() * 1000)
    f_true = float(cam.K[0, 1, 1])
    return CaseResult(yaw, fov, float(err2d), float(err2d) / iod, pose, vertex_mm, expr_mm,
                      abs(track.focal / f_true - 1), seconds, detector_bound(model, emb, truth, cam, obs, yaw))


def detector_bound(model: HeadModel, emb: LandmarkEmbedding, truth: HeadParams, cam, obs, yaw: float) -> float:
    """Head-pose error (degrees) of a PnP of the detected landmarks against the embedding's points on the true
    mesh in the true camera's frame (module doc): 0 for landmarks exactly where the embedding says."""
    import cv2
    points = emb.points(model(truth)[0], model, yaw)                         # world
    cam_pts = (points @ cam.R[0].T + cam.t[0]).double().numpy()              # the true camera's frame
    detected = obs.landmarks[0, emb.landmarks].double().numpy()
    use = (emb.view_weights(torch.tensor([float(yaw)]))[0] @ emb.weight > 0).numpy()    # measured at this view
    ok, rvec, _ = cv2.solvePnP(cam_pts[use], detected[use], cam.K[0].double().numpy(), None, np.zeros(3),
                               np.zeros(3), useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    return math.degrees(float(np.linalg.norm(rvec))) if ok else math.nan


def synthetic_clip(model: HeadModel, k: int, frames: int, res: int = 512, fov: float = 26.0, fps: float = 25.0):
    """A held-out identity talking and turning (``random_animation``: yaw up to 40 degrees, blinks, gaze, jaw),
    seen by a fixed frontal camera: (frames (F, H, W, 3) numpy, true params (F, ...), camera)."""
    from morph4d.cameras import orbit_cameras
    from morph4d.data.format import mix_seed
    from morph4d.data.identity import EVAL_SEEDS, sample_identity
    from morph4d.data.scene import RenderConfig, make_scene, render_sequence, sample_lighting
    from morph4d.data.synth import random_animation

    seed = EVAL_SEEDS.start + k
    g = torch.Generator().manual_seed(mix_seed("tracking-clip", seed))
    identity = sample_identity(seed, model)
    params, _ = random_animation(model, frames, fps, g)
    params = params.replace(shape=identity.shape.clone())
    radius = 0.30 / (2 * math.tan(math.radians(fov) / 2)) * 1.3
    cam = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), radius, fov, res, res)
    images, _ = render_sequence(make_scene(model, identity, res), params, cam, sample_lighting(g), RenderConfig())
    return images[0].numpy().astype(np.float32), params, cam


def clip_pose_errors(model: HeadModel, truth: HeadParams, cam, fitted: HeadParams) -> np.ndarray:
    """Per-frame head-pose error (degrees) of a tracked clip: head-to-camera rotations, the neck included
    (the tracker puts all head rotation in the global rotation)."""
    out = []
    for i in range(truth.jaw.shape[0]):
        Rt = cam.R[0] @ axis_angle_to_matrix(truth.rotation[i]) @ axis_angle_to_matrix(truth.neck[i])
        Rf = CAMERA_R @ axis_angle_to_matrix(fitted.rotation[i])
        out.append(rotation_angle_deg(Rf, Rt))
    return np.array(out)
