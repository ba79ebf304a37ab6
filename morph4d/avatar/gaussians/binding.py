"""Gaussians bound to the triangles of a head mesh (GaussianAvatars, Qian et al., CVPR 2024: "3D Gaussian rigging").

Each Gaussian lives in the local frame of one triangle (its ``binding``) and moves, turns and grows with
it. For triangle (v0, v1, v2), exactly as GaussianAvatars' ``compute_face_orientation``:

* frame ``R = [e0 | n | e0 x n]`` (columns): ``e0 = normalize(v1 - v0)``, ``n = normalize(e0 x (v2 - v0))``
  the unit normal (outward for counter-clockwise faces, CONVENTIONS.md), third column
  ``-(n x e0) = e0 x n``, in the triangle's plane and pointing away from v2; ``det R = +1``;
* scale ``k = (|v1 - v0| + |(v2 - v0) . (e0 x n)|) / 2``: mean of the first edge's length and v2's
  height over it;
* origin: the centroid ``(v0 + v1 + v2) / 3``.

World parameters: ``mean = k R mu + centroid``, ``scale = k exp(s)``, ``rotation = q_R * q`` (quaternion
product, wxyz). ``BoundGaussians`` stores the raw parameters; ``to_world`` is the one place activations
are applied (exp for scales, normalisation for quaternions, sigmoid for opacities).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from morph4d.avatar.gaussians.rasterize import rgb_to_sh

EPS = 1e-12  # guards the normalisations of degenerate (zero-area) triangles


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` wxyz with ``w >= 0``.

    Uses the largest of |w|, |x|, |y|, |z| as the pivot, so it is accurate and differentiable for every
    rotation (including 180 degrees).
    """
    m = R.reshape(*R.shape[:-2], 9).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    # 4 q_i^2 for i = w, x, y, z.
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    q_abs = torch.sqrt(sq.clamp(min=EPS))
    # Row i: the quaternion scaled by 4 q_i, from the pivot q_i.
    candidates = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
    ], dim=-2) / (2 * q_abs[..., None])  # (..., 4, 4)
    best = q_abs.argmax(-1, keepdim=True)[..., None].expand(*q_abs.shape[:-1], 1, 4)
    q = torch.gather(candidates, -2, best)[..., 0, :]
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0)


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions (rotation by b, then by a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def triangle_frames(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GaussianAvatars' per-triangle frames of a mesh (see the module docstring).

    vertices: (N, 3); faces: (T, 3) int64
    Returns rotations ``(T, 3, 3)`` with columns (e0, n, e0 x n), scales ``k (T,)`` and centroids ``(T, 3)``.
    """
    v0, v1, v2 = vertices[faces].unbind(-2)  # (T, 3) each
    e0 = F.normalize(v1 - v0, dim=-1, eps=EPS)
    n = F.normalize(torch.linalg.cross(e0, v2 - v0, dim=-1), dim=-1, eps=EPS)
    e2 = torch.linalg.cross(e0, n, dim=-1)  # = -(n x e0): unit, since e0 and n are orthonormal
    k = 0.5 * ((v1 - v0).norm(dim=-1) + ((v2 - v0) * e2).sum(-1).abs())
    return torch.stack([e0, n, e2], dim=-1), k, (v0 + v1 + v2) / 3


@dataclass
class WorldGaussians:
    """Activated world-space Gaussians, the arguments of ``render_gaussians``.

    means (G, 3), quats (G, 4) unit wxyz, scales (G, 3), opacities (G,) in (0, 1), sh (G, K, 3)
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor


@dataclass
class BoundGaussians:
    """Raw (optimised) parameters of G Gaussians bound to mesh triangles (GaussianAvatars).

    local_means:    (G, 3) mu: offset from the triangle centroid in the triangle frame, in units of k
    log_scales:     (G, 3) s: world scale = k exp(s)
    quats:          (G, 4) wxyz rotation relative to the triangle frame, any norm
    opacity_logits: (G,) world opacity = sigmoid(logit)
    sh:             (G, K, 3) spherical-harmonics colour coefficients, K = (degree + 1)^2 (3DGS order)
    binding:        (G,) int64 triangle index of each Gaussian
    """

    local_means: torch.Tensor
    log_scales: torch.Tensor
    quats: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor
    binding: torch.Tensor

    def __post_init__(self):
        G = self.binding.shape[0] if isinstance(self.binding, torch.Tensor) else -1
        if not isinstance(self.binding, torch.Tensor) or self.binding.dim() != 1 or self.binding.dtype != torch.int64:
            raise ValueError("binding must be a (G,) int64 tensor of triangle indices")
        for name, shape in [("local_means", (G, 3)), ("log_scales", (G, 3)), ("quats", (G, 4)),
                            ("opacity_logits", (G,))]:
            x = getattr(self, name)
            if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape or not x.dtype.is_floating_point:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{name} must be a floating-point tensor of shape {shape}, got {got}")
        if not isinstance(self.sh, torch.Tensor) or self.sh.dim() != 3 or self.sh.shape[0] != G \
                or self.sh.shape[2] != 3 or self.sh.shape[1] not in (1, 4, 9, 16):
            got = tuple(self.sh.shape) if isinstance(self.sh, torch.Tensor) else type(self.sh).__name__
            raise ValueError(f"sh must have shape (G={G}, K, 3) with K in (1, 4, 9, 16), got {got}")

    def __len__(self) -> int:
        return self.binding.shape[0]

    @classmethod
    def one_per_triangle(cls, triangles: torch.Tensor | int, sh_degree: int = 3, opacity: float = 0.1,
                         color=(0.5, 0.5, 0.5), dtype=torch.float32) -> "BoundGaussians":
        """GaussianAvatars' initialisation: one Gaussian at each triangle's centroid (mu = 0), world
        scale k (s = 0), the triangle's orientation (q = identity), opacity 0.1, a constant colour
        (degree-0 SH; higher bands zero).

        triangles: the triangle indices to bind, (T,) int64, or a count T (triangles 0..T-1)
        """
        binding = torch.arange(triangles) if isinstance(triangles, int) else triangles.to(torch.int64)
        G, K = binding.shape[0], (sh_degree + 1) ** 2
        sh = torch.zeros(G, K, 3, dtype=dtype)
        sh[:, 0] = rgb_to_sh(torch.as_tensor(color, dtype=dtype))
        quats = torch.zeros(G, 4, dtype=dtype)
        quats[:, 0] = 1.0
        return cls(local_means=torch.zeros(G, 3, dtype=dtype), log_scales=torch.zeros(G, 3, dtype=dtype),
                   quats=quats, opacity_logits=torch.full((G,), opacity, dtype=dtype).logit(), sh=sh,
                   binding=binding)

    def to_world(self, vertices: torch.Tensor, faces: torch.Tensor) -> WorldGaussians:
        """Activated world-space Gaussians on the posed mesh ``vertices (N, 3)``, ``faces (T, 3)`` int64."""
        if not isinstance(vertices, torch.Tensor) or vertices.dim() != 2 or vertices.shape[1] != 3:
            got = tuple(vertices.shape) if isinstance(vertices, torch.Tensor) else type(vertices).__name__
            raise ValueError(f"vertices must be a (N, 3) tensor (one posed mesh), got {got}")
        if not isinstance(faces, torch.Tensor) or faces.dim() != 2 or faces.shape[1] != 3 or faces.dtype != torch.int64:
            raise ValueError("faces must be a (T, 3) int64 tensor")
        if len(self) and int(self.binding.max()) >= faces.shape[0]:
            raise ValueError(f"binding indexes triangle {int(self.binding.max())} but faces has {faces.shape[0]}")
        R, k, centroid = triangle_frames(vertices, faces)
        return self.place(R, k, centroid, matrix_to_quaternion(R))

    def place(self, R: torch.Tensor, k: torch.Tensor, centroid: torch.Tensor, q_R: torch.Tensor) -> WorldGaussians:
        """``to_world`` from per-triangle frames (``triangle_frames`` output plus ``q_R = matrix_to_quaternion(R)``,
        all indexed by triangle): lets a caller whose mesh is fixed (a fit) compute them once per frame."""
        R, k, centroid = R[self.binding], k[self.binding], centroid[self.binding]
        # R mu as a broadcast product: batched 3 x 3 matmuls (bmm) are several times slower on the CPU
        means = k[:, None] * (R * self.local_means[:, None, :]).sum(-1) + centroid
        return WorldGaussians(means=means, quats=self.world_quats(q_R), scales=k[:, None] * self.log_scales.exp(),
                              opacities=torch.sigmoid(self.opacity_logits), sh=self.sh)

    def world_quats(self, q_R: torch.Tensor) -> torch.Tensor:
        """The world rotations of ``place`` alone (``q_R``: per-triangle frame quaternions), ``(G, 4)``."""
        return quaternion_multiply(q_R[self.binding], F.normalize(self.quats, dim=-1))

    def select(self, index: torch.Tensor) -> "BoundGaussians":
        """The Gaussians at ``index`` (``(G',)`` int64), as differentiable views of these tensors' rows."""
        return BoundGaussians(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The raw tensors by name: a plain-dict checkpoint, one optimizer group per entry."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "BoundGaussians":
        return cls(**{f.name: state[f.name] for f in fields(cls)})
