"""Fit head-model parameters and the camera's focal length to 2D face landmarks (MVP4D §3 / S2: the reference's
tracking; the paper uses FlowFace, unreleased, so this is our tracker).

Model: the landmark points of the head (``embedding.LandmarkEmbedding``) and the two pupil centres, posed by
the head model (shape, expression, jaw, eyes, global rotation and translation; neck kept at zero: a photo
cannot tell neck from global rotation), seen by a pinhole camera at the origin looking along -z of the world
(OpenCV R = diag(1, -1, -1), t = 0) with focal ``f`` (pixels) and the principal point at the image centre.

Energy (ours; a standard landmark fit with Gaussian priors):
    E = sum_l w_l huber(|pi(x_l) - u_l| / s) / sum_l w_l  +  w_iris sum_eyes open_e huber(|pi(pupil_e) - iris_e| / s)
        + shape |beta|^2 / SHAPE_STD^2 * l_shape + l_expr |psi|^2 + l_neg |min(psi, 0)|^2 (built-in head: activations)
        + l_jaw (jaw_y^2 + jaw_z^2 + 0.1 jaw_x^2) + l_eyes |eyes|^2 + l_focal (log f - log f0)^2
        [+ l_time sum_t |x_{t+1} - 2 x_t + x_{t-1}|^2 over per-frame parameters, video only]
with ``s`` the inter-ocular distance in pixels (scale-free residuals). The acceleration penalty is symmetric
in time, so the smoothing it gives has no lag (a causal filter would trail fast motion).

The head model is evaluated on the vertices the embedding touches only (``LandmarkHead``: the same
blendshapes + LBS, joints from precomputed linear maps), which makes one evaluation ~100x cheaper than the
whole mesh; a test checks it against ``HeadModel.forward``. Minimised with L-BFGS (strong Wolfe line search).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import nn

from morph4d.cameras import Cameras
from morph4d.heads import HeadModel, HeadParams
from morph4d.heads.model import axis_angle_to_matrix
from morph4d.tracking.embedding import LandmarkEmbedding
from morph4d.tracking.observe import Observations

CAMERA_R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # world +z (the face's forward) points at the camera
FOCAL_CANDIDATES = (0.9, 1.3, 1.9, 2.8, 4.0)           # x the image's longer side: phone wide .. portrait tele
PER_FRAME = ("expression", "jaw", "eyes", "rotation", "translation")


@dataclass(frozen=True)
class FitConfig:
    shape_weight: float = 1.0      # on (beta / SHAPE_STD)^2
    expression_weight: float = 0.2
    negative_weight: float = 100.0  # built-in expressions are activations >= 0
    jaw_weight: float = 10.0
    eyes_weight: float = 1.0
    focal_weight: float = 1.0
    iris_weight: float = 1.0
    data_weight: float = 20.0      # gain of the landmark + iris terms over the priors (~ effective landmark count)
    time_weight: float = 1e5       # video: acceleration penalty (measured on a synthetic clip: README)
    huber: float = 2.0             # residuals are in percent of the inter-ocular distance
    iterations: int = 20
    frame_iterations: int = 8      # video frames (after the identity is fixed; started from PnP)
    candidate_iterations: int = 6
    focal_candidates: tuple = FOCAL_CANDIDATES


SHAPE_STD = {"builtin": 0.8}  # prior std of the shape coefficients per head model (FLAME's are unit-variance)


class LandmarkHead(nn.Module):
    """The head model evaluated at the landmarks only (module docstring): every landmark of every view bin, and
    each pupil's centre, is a virtual vertex whose template position, blendshapes, pose correctives and
    skinning weights are the barycentric (pupils: mean) blend of its triangle's vertices'. All but skinning are
    linear in the vertices, so this is exact for them; skinning weights blended inside one ~mm triangle move a
    landmark by ~0.1 mm at most where a triangle spans two joints (a test bounds it against ``HeadModel.forward``).
    A frame's view weights blend the bins' virtual vertices into one set of L landmarks before posing."""

    def __init__(self, model: HeadModel, embedding: LandmarkEmbedding):
        super().__init__()
        self.model_name = model.name
        self.embedding = embedding
        self.weight = embedding.weight                                    # (B, L)
        corners = model.faces[embedding.faces]                            # (B, L, 3)
        bary = embedding.bary

        def blend(a: torch.Tensor) -> torch.Tensor:                       # (N, ...) -> (B, L, ...)
            c = a[corners]                                                # (B, L, 3, ...)
            w = bary.reshape(*bary.shape, *([1] * (c.dim() - 3)))
            return (c * w).sum(2)

        pupils = [model.vertex_groups[g] for g in ("pupil_right", "pupil_left") if g in model.vertex_groups]
        self.has_pupils = len(pupils) == 2
        # image-left eye first: the subject's right eye (x < 0) faces the camera on the image's left
        self.pupil_ids = pupils if self.has_pupils else []
        mean = lambda a: torch.stack([a[i].mean(0) for i in self.pupil_ids]) if self.has_pupils else a[:0]  # noqa: E731
        self.template, self.p_template = blend(model.template), mean(model.template)
        self.shapedirs, self.p_shapedirs = blend(model.shapedirs), mean(model.shapedirs)
        self.exprdirs, self.p_exprdirs = blend(model.exprdirs), mean(model.exprdirs)
        self.skin, self.p_skin = blend(model.skin_weights), mean(model.skin_weights)
        if model.posedirs is not None:
            pd = model.posedirs.reshape(36, -1, 3).permute(1, 0, 2)       # (N, 36, 3)
            self.posedirs, self.p_posedirs = blend(pd), mean(pd)
        else:
            self.posedirs = self.p_posedirs = None
        J = model.joint_regressor
        self.j_template = J @ model.template
        self.j_shape = torch.einsum("jn,nks->jks", J, model.shapedirs)
        self.j_expr = torch.einsum("jn,nke->jke", J, model.exprdirs)
        self.num_shape, self.num_expression = model.num_shape, model.num_expression
        self.pupils = self.pupil_ids  # truthy when the model has pupils

    def _blend(self, view: torch.Tensor) -> tuple:
        """Virtual vertices for view weights (..., B): the L landmarks then the 2 pupils."""
        batch = view.shape[:-1]

        def mix(a, p):
            out = (view @ a.reshape(a.shape[0], -1)).reshape(*batch, *a.shape[1:])
            return torch.cat([out, p.expand(*batch, *p.shape)], len(batch))
        pose = None if self.posedirs is None else mix(self.posedirs, self.p_posedirs)
        return (mix(self.template, self.p_template), mix(self.shapedirs, self.p_shapedirs),
                mix(self.exprdirs, self.p_exprdirs), mix(self.skin, self.p_skin), pose)

    def vertices(self, p: HeadParams, view: torch.Tensor) -> torch.Tensor:
        """Posed virtual vertices (..., L + 2, 3) (module docstring)."""
        p = p.expand_shape()
        template, shapedirs, exprdirs, skin, posedirs = self._blend(view)
        v = template + torch.einsum("...nks,...s->...nk", shapedirs, p.shape) \
            + torch.einsum("...nke,...e->...nk", exprdirs, p.expression)
        joints = self.j_template + torch.einsum("jks,...s->...jk", self.j_shape, p.shape) \
            + torch.einsum("jke,...e->...jk", self.j_expr, p.expression)
        rot = axis_angle_to_matrix(p.pose())
        if posedirs is not None:
            feat = (rot[..., 1:, :, :] - torch.eye(3)).flatten(-3)              # (..., 36)
            v = v + torch.einsum("...npk,...p->...nk", posedirs, feat)
        # linear blend skinning (heads.model.linear_blend_skinning's transform, as a few large products)
        parents = (-1, 0, 1, 1, 1)
        rel = torch.cat([joints[..., :1, :], joints[..., 1:, :] - joints[..., list(parents[1:]), :]], -2)
        chain_r, chain_t = [rot[..., 0, :, :]], [rel[..., 0, :]]
        for j in range(1, 5):
            q = parents[j]
            chain_r.append(chain_r[q] @ rot[..., j, :, :])
            chain_t.append(chain_t[q] + (chain_r[q] @ rel[..., j, :, None])[..., 0])
        world_r, world_t = torch.stack(chain_r, -3), torch.stack(chain_t, -2)      # (..., 5, 3, 3), (..., 5, 3)
        offset = world_t - (world_r @ joints[..., None])[..., 0]
        per_joint = torch.einsum("...jab,...nb->...jna", world_r, v) + offset[..., :, None, :]
        posed = torch.einsum("...nj,...jna->...na", skin, per_joint)
        return posed + p.translation[..., None, :]

    def forward(self, p: HeadParams, view: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Landmarks ``(..., L, 3)`` blended between the embedding's view bins by ``view`` (..., B) (default:
        the frontal bin's weights) and pupil centres ``(..., 2, 3)`` (image-left eye first) or None."""
        if view is None:
            view = self.embedding.view_weights(torch.zeros(p.jaw.shape[:-1]))
        v = self.vertices(p, view)
        L = self.template.shape[1]
        return v[..., :L, :], (v[..., L:, :] if self.has_pupils else None)

    def view_yaw(self, p: HeadParams) -> torch.Tensor:
        """Azimuth (degrees) of the tracking camera (at the origin) seen from the head, in the head's frame."""
        root = self.j_template[0] + torch.einsum("ks,...s->...k", self.j_shape[0], p.shape)
        to_camera = -(root + p.translation)                                # world, head root -> camera
        local = (axis_angle_to_matrix(p.rotation).transpose(-1, -2) @ to_camera[..., None])[..., 0]
        return torch.rad2deg(torch.atan2(local[..., 0], local[..., 2]))


def project(points: torch.Tensor, focal: torch.Tensor, cx: float, cy: float) -> torch.Tensor:
    """World points (..., P, 3) -> pixels (..., P, 2) for the tracking camera (R = diag(1, -1, -1), t = 0)."""
    z = (-points[..., 2]).clamp(min=1e-3)
    f = focal[..., None]
    return torch.stack([f * points[..., 0] / z + cx, f * -points[..., 1] / z + cy], -1)


def tracking_camera(focal: float, width: int, height: int, batch: int = 1) -> Cameras:
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    return Cameras(CAMERA_R.expand(batch, 3, 3).clone(), torch.zeros(batch, 3), K.expand(batch, 3, 3).clone(),
                   width, height)


@dataclass
class Track:
    """Fitted parameters of F frames (shape shared) and the focal length in pixels; ``loss`` the final energy."""
    params: HeadParams
    focal: float
    loss: float
    history: list = field(default_factory=list)


# -- parameter vectors ------------------------------------------------------------------------------------
# One frame's unknowns are a flat vector [expression E | jaw 3 | eyes 6 | rotation 3 | translation 3]; the shared
# unknowns are [shape S | log focal 1]. Flat vectors let Levenberg-Marquardt use exact forward-mode Jacobians.

def _frame_sizes(head: LandmarkHead) -> list[int]:
    return [head.num_expression, 3, 6, 3, 3]


def _unpack_frame(head: LandmarkHead, v: torch.Tensor) -> dict:
    return dict(zip(PER_FRAME, torch.split(v, _frame_sizes(head), -1)))


def _pack_frames(head: LandmarkHead, x: dict) -> torch.Tensor:
    return torch.cat([x[k] for k in PER_FRAME], -1)


class _Energy:
    """Residuals of one frame (data + per-frame priors) and of the shared unknowns (module docstring)."""

    def __init__(self, head: LandmarkHead, obs: Observations, emb: LandmarkEmbedding, cfg: FitConfig, focal0: float):
        self.head, self.cfg = head, cfg
        self.target = obs.landmarks[:, emb.landmarks]                 # (F, L, 2)
        self.iris = obs.irises
        self.open = obs.openness
        self.weight_sum = head.weight.sum(-1).mean()                  # landmark weights normalised per frame
        self.scale = obs.scale() / 100              # residuals in percent of the inter-ocular distance
        self.cx, self.cy = obs.width / 2, obs.height / 2
        self.log_f0 = math.log(focal0)
        self.shape_std = SHAPE_STD.get(head.model_name, 1.0)
        self.builtin = head.model_name == "builtin"

    def data(self, i) -> tuple:
        """Frame ``i``'s observations (index or index tensor): target landmarks, irises, openness, scale."""
        iris = self.iris[i] if self.iris is not None else torch.zeros(*self.scale[i].shape, 2, 2)
        opened = self.open[i] if self.open is not None else torch.zeros(*self.scale[i].shape, 2)
        return self.target[i], iris, opened, self.scale[i]

    def frame(self, v: torch.Tensor, shared: torch.Tensor, data: tuple, aux: torch.Tensor) -> torch.Tensor:
        """Residual vector of one frame for frame unknowns ``v``, shared unknowns ``shared`` and the frame's
        observations ``data`` (``data(i)``). ``aux`` (from
        ``aux``, fixed during one LM step): the Huber IRLS weights per landmark and iris, then the view bins'
        interpolation weights at the current pose."""
        c, head = self.cfg, self.head
        x = _unpack_frame(head, v)
        shape, log_f = shared[:-1], shared[-1]
        p = HeadParams(shape, x["expression"], x["jaw"], torch.zeros(3), x["eyes"], x["rotation"], x["translation"])
        target, iris, opened, scale = data
        L = self.target.shape[1]
        robust, view = aux[:L + 2], aux[L + 2:]
        lm, pupils = head(p, view)
        f = log_f.exp()
        sqrt_w = (view @ head.weight / self.weight_sum).clamp(min=0).sqrt() * math.sqrt(c.data_weight)
        d = (project(lm, f, self.cx, self.cy) - target) / scale                        # (L, 2) percent
        out = [(d * (sqrt_w * robust[:L])[:, None]).reshape(-1)]
        if pupils is not None and self.iris is not None:
            di = (project(pupils, f, self.cx, self.cy) - iris) / scale                   # (2, 2)
            wi = (opened * c.iris_weight * c.data_weight / 2).sqrt() * robust[L:]
            out.append((di * wi[:, None]).reshape(-1))
        out.append(math.sqrt(c.expression_weight) * x["expression"])
        if self.builtin:
            out.append(math.sqrt(c.negative_weight) * x["expression"].clamp(max=0))
        jaw = x["jaw"]
        out.append(math.sqrt(c.jaw_weight) * torch.stack([0.3 * jaw[0], jaw[1], jaw[2]]))
        out.append(math.sqrt(c.eyes_weight) * x["eyes"])
        return torch.cat(out)

    def aux(self, V: torch.Tensor, shared: torch.Tensor, data: tuple) -> torch.Tensor:
        """For frames ``V`` (F, P) with observations ``data`` (batched ``data(i)``): the view-bin weights at the
        current pose, and the IRLS weights sqrt(min(1, delta / |r|)) of the Huber loss per landmark and per iris
        at the current estimate; (F, L + 2 + B)."""
        from torch.func import vmap

        L = self.target.shape[1]
        F = V.shape[0]
        with torch.no_grad():
            x = _unpack_frame(self.head, V)
            p = HeadParams(shared[:-1], x["expression"], x["jaw"], torch.zeros(F, 3), x["eyes"], x["rotation"],
                           x["translation"])
            view = self.head.embedding.view_weights(self.head.view_yaw(p).float())       # (F, B)
            r = vmap(lambda v, d, a: self.frame(v, shared, d, a))(V, data, torch.cat([torch.ones(F, L + 2), view], 1))
            sqrt_w = (view @ self.head.weight / self.weight_sum).clamp(min=1e-12).sqrt() \
                * math.sqrt(self.cfg.data_weight)
            dist = r[:, :2 * L].reshape(F, L, 2).norm(dim=-1) / sqrt_w        # unweighted distance in percent
            iris = torch.ones(F, 2)
            if self.iris is not None and self.head.pupils:
                wi = (data[2] * self.cfg.iris_weight * self.cfg.data_weight / 2).sqrt().clamp(min=1e-12)
                iris = r[:, 2 * L:2 * L + 4].reshape(F, 2, 2).norm(dim=-1) / wi
            robust = (self.cfg.huber / torch.cat([dist, iris], 1).clamp(min=1e-9)).clamp(max=1.0).sqrt()
        return torch.cat([robust, view], 1)

    def shared_prior(self, shared: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return torch.cat([math.sqrt(c.shape_weight) * shared[:-1] / self.shape_std,
                          math.sqrt(c.focal_weight) * (shared[-1:] - self.log_f0)])


def _lm_solve(H: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """Solve (H + lam diag(H) + eps) delta = -g (Marquardt's scaling), batched over leading dims."""
    diag = torch.diagonal(H, dim1=-2, dim2=-1)
    A = H + torch.diag_embed(lam * diag + 1e-9)
    return -torch.linalg.solve(A, g[..., None])[..., 0]


def _lm_joint(energy: _Energy, frames: list[int], V: torch.Tensor, shared: torch.Tensor, free_shared: torch.Tensor,
              iterations: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Levenberg-Marquardt over K frames' unknowns ``V`` (K, P) and the shared unknowns (those where
    ``free_shared``), one dense system (photos, a video's identity keyframes)."""
    from torch.func import jacfwd

    K, P = V.shape
    idx = torch.nonzero(free_shared)[:, 0]

    def unflatten(theta):
        sh = shared.clone()
        sh = sh.index_put((idx,), theta[:len(idx)])
        return theta[len(idx):].reshape(K, P), sh

    def residual(theta, robust):
        Vs, sh = unflatten(theta)
        parts = [energy.frame(Vs[k], sh, energy.data(frames[k]), robust[k]) for k in range(K)]
        return torch.cat(parts + [energy.shared_prior(sh)])

    theta = torch.cat([shared[idx], V.reshape(-1)])
    lam, cost = 1e-3, None
    for _ in range(iterations):
        Vs, sh = unflatten(theta)
        robust = energy.aux(Vs, sh, energy.data(torch.tensor(frames)))
        r = residual(theta, robust)
        cost = float(r.pow(2).sum())
        J = jacfwd(residual)(theta, robust).double()   # forward mode may promote; solve in float64 anyway
        H, g = J.T @ J, J.T @ r.double()
        improved = False
        for _ in range(8):
            cand = theta + _lm_solve(H, g, lam).to(theta.dtype)
            c = float(residual(cand, robust).pow(2).sum())
            if c < cost:
                theta, lam, improved = cand, max(lam / 3, 1e-7), True
                break
            lam *= 4
        if not improved or abs(cost - c) < 1e-7 * max(cost, 1e-12):
            break
    Vs, sh = unflatten(theta)
    return Vs, sh, cost


def _lm_frames(energy: _Energy, V: torch.Tensor, shared: torch.Tensor, iterations: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg-Marquardt for F independent frames at once (shared unknowns fixed): batched Jacobians and
    solves. Returns the frames' unknowns and each frame's Gauss-Newton matrix J^T J at the solution."""
    from torch.func import jacfwd, vmap

    F, P = V.shape
    ids = energy.data(torch.arange(F))  # per-frame observations, batched

    def one(v, data, robust):
        return energy.frame(v, shared, data, robust)

    batched_r = vmap(one)
    batched_J = vmap(jacfwd(one))
    lam = torch.full((F,), 1e-3, dtype=torch.float64)
    H = None
    for _ in range(iterations):
        robust = energy.aux(V, shared, ids)
        r = batched_r(V, ids, robust)
        cost = r.pow(2).sum(-1)
        J = batched_J(V, ids, robust).double()                            # (F, M, P)
        H, g = J.transpose(1, 2) @ J, (J.transpose(1, 2) @ r.double()[..., None])[..., 0]
        diag = torch.diagonal(H, dim1=-2, dim2=-1)
        step = -torch.linalg.solve(H + torch.diag_embed(lam[:, None] * diag + 1e-9), g[..., None])[..., 0]
        step = step.to(V.dtype)
        new_cost = batched_r(V + step, ids, robust).pow(2).sum(-1)
        better = new_cost < cost
        V = torch.where(better[:, None], V + step, V)
        lam = torch.where(better, (lam / 3).clamp(min=1e-7), lam * 4)
        if (cost - new_cost).abs().max() < 1e-7:
            break
    return V, H


def _pnp_init(head: LandmarkHead, emb: LandmarkEmbedding, obs: Observations, shape: torch.Tensor, focal: float
              ) -> torch.Tensor:
    """Rotation and translation per frame (F, 6) from OpenCV's PnP on the landmarks of ``shape`` at neutral
    expression: the start of Levenberg-Marquardt."""
    with torch.no_grad():
        lm, _ = head(HeadParams(shape, torch.zeros(head.num_expression), torch.zeros(3), torch.zeros(3),
                                torch.zeros(6), torch.zeros(3), torch.zeros(3)))
        j0 = (head.j_template[0] + torch.einsum("ks,s->k", head.j_shape[0], shape)).double().numpy()
    D = np.diag([1.0, -1.0, -1.0])
    obj = lm.numpy().astype(np.float64) @ D                     # world -> camera axes (R = diag(1, -1, -1))
    K = np.array([[focal, 0, obs.width / 2 - 0.5], [0, focal, obs.height / 2 - 0.5], [0, 0, 1.0]])  # OpenCV centres
    target = obs.landmarks[:, emb.landmarks].numpy().astype(np.float64) - 0.5
    out = torch.zeros(obs.frames, 6)
    out[:, 5] = -0.6
    for i in range(obs.frames):
        ok, rvec, tvec = cv2.solvePnP(obj, target[i], K, None, flags=cv2.SOLVEPNP_EPNP)
        if not ok or tvec[2, 0] <= 0:
            continue
        Rw = D @ cv2.Rodrigues(rvec)[0] @ D          # x_c = Rc D m + tc and x_c = D (Rw m + T)  =>  Rw = D Rc D
        out[i, :3] = torch.as_tensor(cv2.Rodrigues(Rw)[0][:, 0])
        # the head model rotates about its root joint j0: x = Rw (m - j0) + j0 + t  =>  t = T + Rw j0 - j0
        out[i, 3:] = torch.as_tensor(D @ tvec[:, 0] + Rw @ j0 - j0)
    return out


def _start(head: LandmarkHead, emb: LandmarkEmbedding, obs: Observations, shape: torch.Tensor, focal: float
           ) -> torch.Tensor:
    V = torch.zeros(obs.frames, sum(_frame_sizes(head)))
    V[:, -6:] = _pnp_init(head, emb, obs, shape, focal)
    return V


def _to_params(head: LandmarkHead, V: torch.Tensor, shape: torch.Tensor) -> HeadParams:
    x = _unpack_frame(head, V)
    return HeadParams(shape.clone(), x["expression"], x["jaw"], torch.zeros_like(x["jaw"]), x["eyes"], x["rotation"],
                      x["translation"])


def fit_landmarks(model: HeadModel, emb: LandmarkEmbedding, obs: Observations, cfg: FitConfig = FitConfig(),
                  shape: torch.Tensor | None = None, focal: float | None = None,
                  head: LandmarkHead | None = None, focal_start: float | None = None) -> Track:
    """Fit F frames jointly with one shared shape and focal length (a photo: F = 1; a video's identity: its
    keyframes). ``shape`` / ``focal`` given: kept fixed. Without ``focal`` each of ``cfg.focal_candidates`` is
    tried on a short fit and the best is refined with the focal free (``focal_start``: the only candidate)."""
    head = head or LandmarkHead(model, emb)
    side = max(obs.width, obs.height)
    candidates = [focal] if focal is not None else [focal_start] if focal_start is not None else \
        [k * side for k in cfg.focal_candidates]
    shape0 = torch.zeros(head.num_shape) if shape is None else shape.clone()
    free = torch.ones(head.num_shape + 1, dtype=torch.bool)
    free[:-1] = shape is None
    free[-1] = False
    frames = list(range(obs.frames))
    best = None
    for f0 in candidates:
        energy = _Energy(head, obs, emb, cfg, f0)
        shared = torch.cat([shape0, torch.tensor([math.log(f0)])])
        V = _start(head, emb, obs, shape0, f0)
        V, sh, cost = _lm_joint(energy, frames, V, shared, free,
                                cfg.candidate_iterations if len(candidates) > 1 else cfg.iterations)
        if best is None or cost < best[0]:
            best = (cost, V, sh, energy)
    cost, V, sh, energy = best
    if focal is None:
        free[-1] = True
        V, sh, cost = _lm_joint(energy, frames, V, sh, free, cfg.iterations)
    return Track(_to_params(head, V, sh[:-1]), float(sh[-1].exp()), cost)
