"""``HeadModel``: a linear blendshape head with linear blend skinning (LBS), the shared machinery of
FLAME and the built-in head.

Both models are the same computation (FLAME, Li et al. 2017, Eq. 1-4): template + shape and expression
blendshapes, joints regressed from the shaped mesh, pose-corrective blendshapes, then LBS over the
5-joint FLAME tree. A model is just different arrays, so there is one class and two loaders
(``flame.load_flame``, ``builtin.load_builtin_head``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from morph4d.errors import Morph4DError
from morph4d.heads.base import JOINT_NAMES, PARENTS, HeadParams
from morph4d.io import atomic_path


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: ``(..., 3)`` axis-angle -> ``(..., 3, 3)`` rotation, smooth at zero."""
    angle = aa.norm(dim=-1, keepdim=True)  # (..., 1)
    # Taylor-safe coefficients: sin(a)/a and (1 - cos(a))/a^2 are finite and smooth at a = 0.
    a2 = (angle * angle)[..., None]  # (..., 1, 1)
    small = a2 < 1e-8
    safe = torch.where(small, torch.ones_like(a2), a2)
    s = torch.where(small, 1 - a2 / 6, torch.sin(safe.sqrt()) / safe.sqrt())
    c = torch.where(small, 0.5 - a2 / 24, (1 - torch.cos(safe.sqrt())) / safe)
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + s * k + c * (k @ k)


def linear_blend_skinning(vertices: torch.Tensor, joints: torch.Tensor, rotations: torch.Tensor,
                          weights: torch.Tensor, parents: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose ``vertices`` (..., N, 3) by joint ``rotations`` (..., J, 3, 3) about rest ``joints`` (..., J, 3).

    Returns posed vertices (..., N, 3) and posed joint positions (..., J, 3). ``parents[j]`` is the
    parent of joint j (-1 for the root); joints are ordered so a parent precedes its children.
    """
    J = joints.shape[-2]
    rel = joints.clone()
    rel[..., 1:, :] = joints[..., 1:, :] - joints[..., list(parents[1:]), :]
    chain_r, chain_t = [rotations[..., 0, :, :]], [rel[..., 0, :]]
    for j in range(1, J):
        p = parents[j]
        chain_r.append(chain_r[p] @ rotations[..., j, :, :])
        chain_t.append(chain_t[p] + (chain_r[p] @ rel[..., j, :, None])[..., 0])
    world_r = torch.stack(chain_r, dim=-3)  # (..., J, 3, 3)
    world_t = torch.stack(chain_t, dim=-2)  # (..., J, 3): posed joint positions
    # Skinning transforms map rest positions: x -> R_world (x - j_rest) + j_posed.
    offset = world_t - (world_r @ joints[..., None])[..., 0]  # (..., J, 3)
    blend_r = torch.einsum("nj,...jab->...nab", weights, world_r)  # (..., N, 3, 3)
    blend_t = torch.einsum("nj,...ja->...na", weights, offset)  # (..., N, 3)
    posed = (blend_r @ vertices[..., None])[..., 0] + blend_t
    return posed, world_t


class HeadModel(nn.Module):
    """Linear blendshape + LBS head model (see module docstring).

    Arrays (N vertices, T triangles, S shape and E expression components, 5 joints):
      template (N, 3), shapedirs (N, 3, S), exprdirs (N, 3, E), posedirs (4*9, N*3) or None,
      joint_regressor (5, N), skin_weights (N, 5), faces (T, 3), uvs (M, 2), uv_faces (T, 3),
      vertex_groups: name -> vertex indices (e.g. "eyes", "mouth_interior").
    """

    def __init__(self, name: str, template, faces, shapedirs, exprdirs, joint_regressor, skin_weights,
                 posedirs=None, uvs=None, uv_faces=None, vertex_groups: dict | None = None,
                 shape_names=None, expression_names=None):
        super().__init__()
        t = lambda a, dtype=torch.float32: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
        self.name = name
        self.register_buffer("template", t(template), persistent=False)
        self.register_buffer("faces", t(faces, torch.long), persistent=False)
        self.register_buffer("shapedirs", t(shapedirs), persistent=False)
        self.register_buffer("exprdirs", t(exprdirs), persistent=False)
        self.register_buffer("joint_regressor", t(joint_regressor), persistent=False)
        self.register_buffer("skin_weights", t(skin_weights), persistent=False)
        self.register_buffer("posedirs", None if posedirs is None else t(posedirs), persistent=False)
        self.register_buffer("uvs", None if uvs is None else t(uvs), persistent=False)
        self.register_buffer("uv_faces", None if uv_faces is None else t(uv_faces, torch.long), persistent=False)
        self.vertex_groups = {k: torch.as_tensor(np.asarray(v), dtype=torch.long)
                              for k, v in (vertex_groups or {}).items()}
        self.shape_names = tuple(str(n) for n in shape_names) if shape_names is not None else \
            tuple(f"shape_{k}" for k in range(self.shapedirs.shape[-1]))
        self.expression_names = tuple(str(n) for n in expression_names) if expression_names is not None else \
            tuple(f"expression_{k}" for k in range(self.exprdirs.shape[-1]))
        N = self.template.shape[0]
        checks = {"template": (self.template, (N, 3)), "shapedirs": (self.shapedirs, (N, 3, None)),
                  "exprdirs": (self.exprdirs, (N, 3, None)), "joint_regressor": (self.joint_regressor, (5, N)),
                  "skin_weights": (self.skin_weights, (N, 5)), "faces": (self.faces, (None, 3))}
        if self.posedirs is not None:
            checks["posedirs"] = (self.posedirs, (36, N * 3))
        for key, (arr, want) in checks.items():
            if arr.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, arr.shape)):
                raise Morph4DError(f"head model '{name}': array '{key}' has shape {tuple(arr.shape)}, expected "
                                   f"{tuple('any' if w is None else w for w in want)}")

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def num_shape(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def num_expression(self) -> int:
        return self.exprdirs.shape[-1]

    joint_names = JOINT_NAMES
    parents = PARENTS

    def zero_params(self, batch: tuple[int, ...] = ()) -> HeadParams:
        return HeadParams.zeros(self.num_shape, self.num_expression, batch, device=self.template.device)

    # -- geometry -----------------------------------------------------------------------------------
    def neutral(self, shape: torch.Tensor) -> torch.Tensor:
        """Neutral-expression, unposed mesh of identity ``shape`` (..., S) -> (..., N, 3)."""
        if shape.shape[-1:] != (self.num_shape,):
            raise Morph4DError(f"shape must be (..., {self.num_shape}), got {tuple(shape.shape)}")
        return self.template + torch.einsum("nks,...s->...nk", self.shapedirs, shape)

    def forward(self, params: HeadParams, apply_global: bool = True) -> torch.Tensor:
        """Posed vertices ``(..., N, 3)``.

        ``apply_global=False`` zeroes the global rotation, translation and neck rotation: the expressed
        mesh "before the global head transform" of MVP4D's expression deformation maps (§3.2).
        """
        params.check(self.num_shape, self.num_expression)
        params = params.expand_shape()
        if not apply_global:
            z = torch.zeros_like(params.rotation)
            params = params.replace(rotation=z, neck=z, translation=z)
        # 1. blendshapes (FLAME Eq. 2): T + B_S(beta) + B_E(psi)
        v = self.neutral(params.shape) + torch.einsum("nke,...e->...nk", self.exprdirs, params.expression)
        # 2. joints regressed from the shaped, expressed mesh (FLAME's J(beta, psi))
        joints = torch.einsum("jn,...nk->...jk", self.joint_regressor, v)
        rot = axis_angle_to_matrix(params.pose())  # (..., 5, 3, 3)
        # 3. pose-corrective blendshapes driven by (R - I) of the non-root joints (FLAME Eq. 3)
        if self.posedirs is not None:
            eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
            feat = (rot[..., 1:, :, :] - eye).flatten(-3)  # (..., 36)
            v = v + (feat @ self.posedirs).reshape(*feat.shape[:-1], -1, 3)
        # 4. linear blend skinning, then global translation
        posed, _ = linear_blend_skinning(v, joints, rot, self.skin_weights, self.parents)
        return posed + params.translation[..., None, :]

    def joints(self, params: HeadParams) -> torch.Tensor:
        """Posed joint positions ``(..., 5, 3)`` (neck, jaw and eye pivots), translation included."""
        params.check(self.num_shape, self.num_expression)
        params = params.expand_shape()
        v = self.neutral(params.shape) + torch.einsum("nke,...e->...nk", self.exprdirs, params.expression)
        rest = torch.einsum("jn,...nk->...jk", self.joint_regressor, v)
        _, posed = linear_blend_skinning(v[..., :1, :], rest, axis_angle_to_matrix(params.pose()),
                                         self.skin_weights[:1], self.parents)
        return posed + params.translation[..., None, :]

    # -- persistence --------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k).cpu().numpy() for k in
               ("template", "faces", "shapedirs", "exprdirs", "joint_regressor", "skin_weights")}
        for k in ("posedirs", "uvs", "uv_faces"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k).cpu().numpy()
        for k, v in self.vertex_groups.items():
            out[f"group_{k}"] = v.numpy()
        out["shape_names"] = np.array(self.shape_names)
        out["expression_names"] = np.array(self.expression_names)
        return out

    def save_npz(self, path: str | Path) -> None:
        """Write the model as a plain .npz (no pickles), atomically."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, name=np.array(self.name), **self.arrays())

    @classmethod
    def load_npz(cls, path: str | Path) -> "HeadModel":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"head model file not found: {path}")
        required = ("template", "faces", "shapedirs", "exprdirs", "joint_regressor", "skin_weights")
        try:
            data = np.load(path, allow_pickle=False)
            missing = [k for k in required if k not in data.files]
        except Exception as e:  # zip/npy format errors: corrupt or not an .npz at all
            raise Morph4DError(f"{path} is not a readable .npz head model ({e}); expected keys {required}") from e
        if missing:
            raise Morph4DError(f"{path} is missing keys {missing}; a head model .npz needs {required}")
        groups = {k[len("group_"):]: data[k] for k in data.files if k.startswith("group_")}
        opt = {k: data[k] for k in ("posedirs", "uvs", "uv_faces", "shape_names", "expression_names")
               if k in data.files}
        name = str(data["name"]) if "name" in data.files else path.stem
        return cls(name, *(data[k] for k in required[:2]), data["shapedirs"], data["exprdirs"],
                   data["joint_regressor"], data["skin_weights"], vertex_groups=groups, **opt)

    def describe(self) -> str:
        return (f"{self.name}: {self.num_vertices} vertices, {self.faces.shape[0]} triangles, "
                f"{self.num_shape} shape and {self.num_expression} expression components, "
                f"UVs {'yes' if self.uvs is not None else 'no'}, groups {sorted(self.vertex_groups)}")
