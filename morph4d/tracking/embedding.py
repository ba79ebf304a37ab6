"""Landmark embeddings: where each MediaPipe face-mesh landmark lies on a head model's surface.

An embedding is, per landmark, a triangle of the head mesh and barycentric coordinates in it (the form of
FLAME's landmark embeddings), plus a weight for the fit. Two sources:

* **built-in head**: ``assets/builtin_mediapipe_embedding.npz``, made by ``calibrate`` (run
  ``python -m morph4d.tracking.embedding``; deterministic). The built-in head has no artist-placed
  correspondence to MediaPipe's canonical face, so we measure it: training identities of our synthetic data
  (never the held-out seeds) are rendered at random views and expressions, the face mesh is run on each render,
  and every landmark pixel is traced back onto the head surface through the rasterizer (triangle + barycentrics
  -> template coordinates). The per-landmark median over renders in which that surface faces the camera
  (cos > 0.35, the sliding silhouette excluded) is snapped back onto the skin surface. The spread of the
  samples sets the landmark's weight. This is our choice (the papers use FLAME's published embeddings); it
  makes the embedding agree with how the detector actually reads our heads.
* **FLAME**: the user's embedding file (e.g. the MediaPipe-to-FLAME ``.npz`` shipped with MICA / DECA
  derivatives: ``lmk_face_idx``, ``lmk_b_coords``, ``landmark_indices``), given as a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel
from morph4d.io import atomic_path
from morph4d.validate import read_npz

EMBEDDING_VERSION = 1
BUILTIN_EMBEDDING = Path(__file__).resolve().parent.parent / "assets" / "builtin_mediapipe_embedding.npz"
FACING_MIN = 0.35          # samples on surface turned further than ~70 degrees from the camera are not used
SPREAD_SCALE_M = 0.002     # weight = 1 / (1 + (spread / 2 mm)^2)
MAX_SPREAD_M = 0.006       # landmarks whose samples scatter more than 6 mm (median distance) are left out


@dataclass
class LandmarkEmbedding:
    """Per landmark and per view bin: a triangle, barycentrics and a fit weight. ``yaws`` are the bins' centres
    (degrees, the camera's azimuth seen from the head, CONVENTIONS.md); a fit interpolates linearly between the
    two nearest bins at its current head pose. A FLAME file has one bin (``yaws = [0]``): a fixed embedding."""
    landmarks: torch.Tensor   # (L,) MediaPipe face-mesh indices
    faces: torch.Tensor       # (B, L) triangle of the head mesh
    bary: torch.Tensor        # (B, L, 3) barycentric coordinates in it
    weight: torch.Tensor      # (B, L) fit weight in [0, 1]
    yaws: torch.Tensor        # (B,) bin centres, degrees, increasing
    head_model: str

    def vertices_used(self, model: HeadModel) -> torch.Tensor:
        """The head vertices the embedding touches (sorted, unique)."""
        return torch.unique(model.faces[self.faces].reshape(-1))

    def view_weights(self, yaw_deg: torch.Tensor) -> torch.Tensor:
        """Interpolation weights ``(..., B)`` of the bins at ``yaw_deg`` (...,): linear, clamped at the ends."""
        y = self.yaws.to(yaw_deg.dtype)
        if len(y) == 1:
            return torch.ones(*yaw_deg.shape, 1, dtype=yaw_deg.dtype)
        yaw = yaw_deg.clamp(float(y[0]), float(y[-1]))
        hi = torch.searchsorted(y, yaw.detach().contiguous(), right=True).clamp(1, len(y) - 1)
        lo = hi - 1
        t = (yaw - y[lo]) / (y[hi] - y[lo])
        w = torch.zeros(*yaw.shape, len(y), dtype=yaw.dtype)
        w.scatter_(-1, lo[..., None], (1 - t)[..., None])
        w.scatter_add_(-1, hi[..., None], t[..., None])
        return w

    def points(self, vertices: torch.Tensor, model: HeadModel, yaw_deg: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Landmark positions ``(..., L, 3)`` from posed vertices ``(..., N, 3)`` seen from ``yaw_deg``."""
        tri = vertices[..., model.faces[self.faces], :]  # (..., B, L, 3, 3)
        per_bin = (tri * self.bary[..., None]).sum(-2)    # (..., B, L, 3)
        w = self.view_weights(torch.as_tensor(yaw_deg, dtype=vertices.dtype))
        return (per_bin * w[..., :, None, None]).sum(-3)

    def save(self, path: str | Path, **provenance) -> None:
        arrays = dict(landmarks=self.landmarks.numpy(), faces=self.faces.numpy(), bary=self.bary.numpy(),
                      weight=self.weight.numpy(), yaws=self.yaws.numpy(), head_model=np.array(self.head_model),
                      version=np.array(EMBEDDING_VERSION))
        arrays.update({f"provenance_{k}": np.array(v) for k, v in provenance.items()})
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)


def load_embedding(path: str | Path, model: HeadModel) -> LandmarkEmbedding:
    """Our embedding file, or a FLAME MediaPipe embedding (``lmk_face_idx``, ``lmk_b_coords``,
    ``landmark_indices``), checked against ``model``'s triangles."""
    data = read_npz(path, "landmark embedding")
    if {"landmarks", "faces", "bary"} <= set(data):
        lm, faces, bary = data["landmarks"], data["faces"], data["bary"]
        name = str(data["head_model"]) if "head_model" in data else model.name
        if name != model.name:
            raise Morph4DError(f"{path}: the landmark embedding is for the '{name}' head model, but the head model in "
                               f"use is '{model.name}'")
    elif {"lmk_face_idx", "lmk_b_coords", "landmark_indices"} <= set(data):
        lm, faces, bary = data["landmark_indices"], data["lmk_face_idx"], data["lmk_b_coords"]
    else:
        raise Morph4DError(f"{path} is not a landmark embedding: expected arrays (landmarks, faces, bary) or FLAME's "
                           f"MediaPipe embedding (lmk_face_idx, lmk_b_coords, landmark_indices); found {sorted(data)}")
    if faces.ndim == 1:  # one view bin
        faces, bary = faces[None], bary[None]
    L, B = len(lm), faces.shape[0]
    weight = data["weight"] if "weight" in data else np.ones((B, L))
    yaws = data["yaws"] if "yaws" in data else np.zeros(B)
    if weight.ndim == 1:
        weight = weight[None]
    if L == 0 or lm.ndim != 1 or faces.shape != (B, L) or bary.shape != (B, L, 3) or weight.shape != (B, L) \
            or yaws.shape != (B,) or (B > 1 and not np.all(np.diff(yaws) > 0)):
        raise Morph4DError(f"{path}: expected L landmark indices, (B, L) triangles, (B, L, 3) barycentrics, (B, L) "
                           f"weights and B increasing view bins; got {lm.shape}, {faces.shape}, {bary.shape}, "
                           f"{weight.shape}, {yaws.shape}")
    T = model.faces.shape[0]
    if faces.min() < 0 or faces.max() >= T or lm.min() < 0 or lm.max() >= 468:
        raise Morph4DError(f"{path}: triangle indices must lie in [0, {T}) for head model '{model.name}' and "
                           f"landmark indices in [0, 468); got triangles {faces.min()}..{faces.max()}, landmarks "
                           f"{lm.min()}..{lm.max()}")
    f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    return LandmarkEmbedding(torch.as_tensor(lm, dtype=torch.long), torch.as_tensor(faces, dtype=torch.long),
                             f32(bary), f32(weight), f32(yaws), model.name)


def default_embedding(model: HeadModel, path: str | Path | None = None) -> LandmarkEmbedding:
    """The embedding for ``model``: ``path`` when given, the shipped one for the built-in head, else an error
    saying which file FLAME needs."""
    if path is not None:
        return load_embedding(path, model)
    if model.name == "builtin":
        return load_embedding(BUILTIN_EMBEDDING, model)
    raise Morph4DError(f"tracking with the '{model.name}' head model needs its MediaPipe landmark embedding: pass "
                       f"--embedding PATH (e.g. FLAME's mediapipe_landmark_embedding.npz with lmk_face_idx, "
                       f"lmk_b_coords, landmark_indices)")


def skin_triangles(model: HeadModel) -> torch.Tensor:
    """Boolean (T,): triangles of the face/head skin (not eyeballs, mouth interior, teeth or tongue)."""
    inner = torch.zeros(model.num_vertices, dtype=torch.bool)
    for g in ("eyes", "mouth_interior", "teeth_upper", "teeth_lower", "tongue", "mouth_cavity"):
        if g in model.vertex_groups:
            inner[model.vertex_groups[g]] = True
    return ~inner[model.faces].any(-1)


def closest_on_triangles(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor,
                         allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each point (P, 3) the closest point on the allowed triangles: (triangle (P,), barycentrics (P, 3)).
    Candidates are the triangles around the 8 nearest vertices (exact on a fine mesh)."""
    tri_ids = torch.nonzero(allowed)[:, 0]
    used = torch.unique(faces[tri_ids].reshape(-1))
    near = used[torch.cdist(points, verts[used]).topk(8, largest=False).indices]  # (P, 8)
    out_t, out_b = [], []
    for p, vs in zip(points, near):
        cand = tri_ids[torch.isin(faces[tri_ids], vs).any(-1)]
        a, b, c = (verts[faces[cand, i]] for i in range(3))
        bary = _closest_bary(p, a, b, c)
        q = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
        k = (q - p).norm(dim=-1).argmin()
        out_t.append(cand[k])
        out_b.append(bary[k])
    return torch.stack(out_t), torch.stack(out_b)


def _closest_bary(p, a, b, c, iterations: int = 40):
    """Barycentrics of the closest point to ``p`` on triangles (a, b, c) (projected gradient on the simplex)."""
    ab, ac = b - a, c - a
    G = torch.stack([torch.stack([(ab * ab).sum(-1), (ab * ac).sum(-1)], -1),
                     torch.stack([(ab * ac).sum(-1), (ac * ac).sum(-1)], -1)], -2)  # (T, 2, 2)
    r = torch.stack([((p - a) * ab).sum(-1), ((p - a) * ac).sum(-1)], -1)
    st = torch.linalg.solve(G + 1e-12 * torch.eye(2), r)  # unconstrained projection onto the plane
    s, t = st[:, 0], st[:, 1]
    inside = (s >= 0) & (t >= 0) & (s + t <= 1)
    out = torch.stack([1 - s - t, s, t], -1)
    if inside.all():
        return out
    # outside: the closest point lies on an edge; test the three edges and keep the nearest
    def seg(x, y):
        d = y - x
        u = (((p - x) * d).sum(-1) / (d * d).sum(-1).clamp(min=1e-20)).clamp(0, 1)
        return u, (x + u[:, None] * d - p).norm(dim=-1)
    u0, d0 = seg(a, b)
    u1, d1 = seg(b, c)
    u2, d2 = seg(c, a)
    z = torch.zeros_like(u0)
    edge = torch.stack([torch.stack([1 - u0, u0, z], -1), torch.stack([z, 1 - u1, u1], -1),
                        torch.stack([u2, z, 1 - u2], -1)], 1)
    best = torch.stack([d0, d1, d2], 1).argmin(1)
    on_edge = edge[torch.arange(len(best)), best]
    return torch.where(inside[:, None], out, on_edge)


CALIBRATION_SEEDS = range(700000, 700160)  # training-range identities (identity.EVAL_SEEDS start at 900000)
VIEW_BINS = tuple(range(-60, 61, 15))        # degrees of camera azimuth around the head
MAX_AZIMUTH = 62.0


def calibrate(model: HeadModel, seeds=CALIBRATION_SEEDS, res: int = 512, views_per_identity: int = 3,
              bins=VIEW_BINS, log=print) -> tuple[LandmarkEmbedding, dict]:
    """Measure the built-in head's MediaPipe embedding on synthetic renders (module docstring), per view bin."""
    from morph4d.cameras import VIEW_FOV, VIEW_RADIUS, orbit_cameras
    from morph4d.data.format import mix_seed, select_frames
    from morph4d.data.identity import sample_identity
    from morph4d.data.scene import RenderConfig, make_scene, render_sequence, sample_lighting
    from morph4d.data.synth import random_animation
    from morph4d.mesh.raster import rasterize
    from morph4d.mesh.shade import vertex_normals
    from morph4d.tracking.detect import MEDIAPIPE_VERSION, NUM_MESH_LANDMARKS, FaceModels
    from morph4d.tracking.observe import observe_image

    fm = FaceModels()
    skin = skin_triangles(model)
    points, azimuths, owners = [], [], []  # per sample: template point, view azimuth, landmark
    renders = 0
    for seed in seeds:
        g = torch.Generator().manual_seed(mix_seed("embedding", seed))
        identity = sample_identity(seed, model)
        scene = make_scene(model, identity, res)
        params, _ = random_animation(model, 1, 25.0, g)
        params = select_frames(params.replace(shape=identity.shape.clone()), [0])
        zero = torch.zeros_like(params.rotation)
        params = params.replace(rotation=zero, neck=zero)  # the camera alone sets the view
        az = (torch.rand(views_per_identity, generator=g) * 2 - 1) * MAX_AZIMUTH
        el = (torch.rand(views_per_identity, generator=g) * 2 - 1) * 15
        cams = orbit_cameras(az, el, VIEW_RADIUS, VIEW_FOV, res, res)
        images, _ = render_sequence(scene, params, cams, sample_lighting(g), RenderConfig())
        verts = model(params)[0]
        normals = vertex_normals(verts[None], model.faces)[0]
        raster = rasterize(verts, model.faces, cams)
        for v in range(views_per_identity):
            img = images[v, 0].numpy().astype(np.float32)
            try:  # the same evidence the tracker uses (observe: two passes, averaged crop variations)
                pts = observe_image(fm, img, "calibration render")[0].landmarks
            except Morph4DError:
                continue
            renders += 1
            cols = torch.as_tensor(np.clip(pts[:, 0].astype(int), 0, res - 1))
            rows = torch.as_tensor(np.clip(pts[:, 1].astype(int), 0, res - 1))
            tri = raster.triangle_id[v, rows, cols]
            ok = tri >= 0
            ok[ok.clone()] = skin[tri[ok]]
            idx = torch.nonzero(ok)[:, 0]
            f = model.faces[tri[idx]]                                    # (n, 3)
            bary = raster.bary[v, rows[idx], cols[idx]]                  # (n, 3)
            n = (normals[f] * bary[..., None]).sum(1)
            p = (verts[f] * bary[..., None]).sum(1)
            view = cams.centers[v] - p
            facing = (n * view).sum(-1) / (n.norm(dim=-1) * view.norm(dim=-1))
            keep = facing >= FACING_MIN
            points.append((model.template[f[keep]] * bary[keep][..., None]).sum(1))
            azimuths.append(torch.full((int(keep.sum()),), float(az[v])))
            owners.append(idx[keep])
        log(f"seed {seed}: {renders} renders with a face")
    points, azimuths, owners = torch.cat(points), torch.cat(azimuths), torch.cat(owners)
    step = float(bins[1] - bins[0])
    B = len(bins)
    centre = torch.full((B, NUM_MESH_LANDMARKS, 3), float("nan"))
    spread = torch.full((B, NUM_MESH_LANDMARKS), float("inf"))
    for b, c in enumerate(bins):
        near = (azimuths - c).abs() <= step  # the samples of this bin's triangular interpolation support
        for i in range(NUM_MESH_LANDMARKS):
            s = points[near & (owners == i)]
            if len(s) < 8:
                continue
            m = s.median(0).values
            centre[b, i] = m
            spread[b, i] = (s - m).norm(dim=-1).median()
    # landmarks measured (spread under MAX_SPREAD_M) in the frontal bin are kept; bins where one was not
    # measured take the nearest measured bin's position with weight 0
    valid = spread <= MAX_SPREAD_M
    keep = torch.nonzero(valid[B // 2])[:, 0]
    weight = torch.where(valid, 1 / (1 + (spread / SPREAD_SCALE_M) ** 2), torch.zeros(()))[:, keep]
    centre = centre[:, keep]
    for b in range(B):
        for j in range(len(keep)):
            if not valid[b, keep[j]]:
                nearest = min((abs(b2 - b), b2) for b2 in range(B) if valid[b2, keep[j]])[1]
                centre[b, j] = centre[nearest, j]
    tri, bary = closest_on_triangles(centre.reshape(-1, 3), model.template, model.faces, skin)
    emb = LandmarkEmbedding(keep, tri.reshape(B, -1), bary.reshape(B, -1, 3).float(), weight.float(),
                            torch.tensor(bins, dtype=torch.float32), model.name)
    info = dict(mediapipe=MEDIAPIPE_VERSION, seeds=f"{seeds.start}..{seeds.stop - 1}", renders=renders, res=res,
                median_spread_mm=float(spread[valid].median() * 1000), landmarks=len(keep), bins=B)
    return emb, info


def main(argv=None) -> None:
    import argparse

    from morph4d.heads import load_head_model
    from morph4d.threads import DEFAULT_THREADS, configure_threads

    ap = argparse.ArgumentParser(description="regenerate the built-in head's MediaPipe landmark embedding")
    ap.add_argument("--out", default=str(BUILTIN_EMBEDDING))
    ap.add_argument("--identities", type=int, default=len(CALIBRATION_SEEDS))
    a = ap.parse_args(argv)
    configure_threads(DEFAULT_THREADS)
    model = load_head_model("builtin")
    seeds = range(CALIBRATION_SEEDS.start, CALIBRATION_SEEDS.start + a.identities)
    emb, info = calibrate(model, seeds)
    emb.save(a.out, **info)
    print(f"wrote {a.out}: {info}")


if __name__ == "__main__":
    main()
