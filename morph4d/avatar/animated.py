"""The animated avatar file (``.m4da``, docs/AVATAR_FORMAT.md): a fitted avatar baked with one animation, in a
layout a browser loads with one ``fetch`` (the WebGL viewer, ``morph4d/avatar/viewer/index.html``) and Python reads with
``read_animated``.

One little-endian file: ``b"M4DA"``, uint32 format version, uint32 byte length J of a UTF-8 JSON header, the
header (space-padded so the binary section starts on an 8-byte boundary), then the binary section. The
header's ``buffers`` name each array's dtype, shape and byte offset (8-byte aligned, relative to the binary
section). Arrays: the bound Gaussians' raw parameters (``binding``, ``local_means``, ``log_scales``, ``quats``,
``opacity_logits``, ``sh``), the mesh (``faces`` and per-frame posed ``vertices``), and, when ``Avatar.world``
adds a per-frame deformation, what it adds: ``deformation`` (F, G, 3) world offsets of the means (metres) and
``deformation_rotation`` (F, G, 3), the x, y, z of the world rotation (unit quaternion, w >= 0) applied on the
left of each Gaussian's rotation.

``place(anim, frame)`` is the numpy reference of the placement the viewer re-implements in JavaScript; a test
compares it with ``Avatar.world``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from morph4d.avatar.gaussians import quaternion_multiply
from morph4d.cameras import VIEW_FOV
from morph4d.errors import Morph4DError
from morph4d.io import atomic_path

MAGIC = b"M4DA"
FORMAT = "morph4d-animated-avatar"
VERSION = 1
SH_C0 = 0.28209479177387814   # degree-0 SH basis constant (3DGS)
EPS = 1e-12                   # the normalisation guard of binding.triangle_frames
# On-disk dtype per array. float16 where its ~3 significant digits are below what a viewer can see (colours,
# log-scales, rotations, logits, mm-sized deformations); float32 for the vertices and local means: the
# triangle frames come from vertex differences, and the built-in head's sliver triangles (v2 a few um off the
# first edge) turn even 6 um of rounding (uint16 over the head's box) into 0.14 rad of frame rotation.
DTYPES = {"faces": "uint32", "vertices": "float32", "binding": "uint32", "local_means": "float32",
          "log_scales": "float16", "quats": "float16", "opacity_logits": "float16", "sh": "float16",
          "deformation": "float16", "deformation_rotation": "float16"}
_NP = {"uint32": "<u4", "uint16": "<u2", "float32": "<f4", "float16": "<f2"}


@dataclass
class AnimatedAvatar:
    """An avatar baked with an animation of F frames (numpy, float32 unless stated).

    faces (T, 3) int64; vertices (F, N, 3) posed mesh; binding (G,) int64; local_means (G, 3);
    log_scales (G, 3); quats (G, 4) wxyz; opacity_logits (G,); sh (G, K, 3); deformation (F, G, 3) world
    offsets of the means and deformation_rotation (F, G, 3) x, y, z of the world delta rotations (w >= 0),
    both or neither None; fps; camera: the viewing hint (``camera_hint``); meta: free JSON fields
    (animation name, head model).
    """
    faces: np.ndarray
    vertices: np.ndarray
    binding: np.ndarray
    local_means: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray
    deformation: np.ndarray | None
    deformation_rotation: np.ndarray | None
    fps: float
    camera: dict
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.vertices.shape[0]


def camera_hint(vertices: np.ndarray, fov: float = VIEW_FOV, fill: float = 0.8) -> dict:
    """A camera in front of the face (+z, CONVENTIONS.md) looking at the centre of the mesh's bounding box
    over all frames, far enough that the box's larger side fills ``fill`` of the vertical field of view."""
    lo, hi = vertices.reshape(-1, 3).min(0), vertices.reshape(-1, 3).max(0)
    target = (lo + hi) / 2
    distance = float(max(hi[0] - lo[0], hi[1] - lo[1]) / fill / (2 * math.tan(math.radians(fov) / 2)))
    return {"target": target.tolist(), "position": (target + [0.0, 0.0, distance]).tolist(), "up": [0.0, 1.0, 0.0],
            "fov_deg": fov}


def bake(avatar, vertices: torch.Tensor, fitted: bool, fps: float, meta: dict | None = None) -> AnimatedAvatar:
    """Bake ``avatar`` (``morph4d.avatar.model.Avatar``) on posed ``vertices`` (F, N, 3).

    ``fitted``: frame f of ``vertices`` is frame f of the fitted sequence, so ``Avatar.world(v, f)`` may add
    its per-frame deformation. What it adds is stored whatever its parametrisation: the world means' offsets
    and the world delta rotations ``q_f * conj(q_none)`` of ``world(v, f)`` against ``world(v, None)``; both are
    left out when zero everywhere (an avatar without deformation, or any other animation). Scales, opacities
    and colours are checked to be undeformed (the format has no room for them).
    """
    g = avatar.gaussians
    deformation = rotation = None
    if fitted:
        offsets, turns = [], []
        with torch.no_grad():
            for f, v in enumerate(vertices):
                a, b = avatar.world(v, f), avatar.world(v, None)
                if not (torch.equal(a.scales, b.scales) and torch.equal(a.opacities, b.opacities)
                        and torch.equal(a.sh, b.sh)):
                    raise Morph4DError("this avatar's deformation changes scales, opacities or colours, which the "
                                       "animated format (version 1) cannot store")
                qa, qb = (torch.nn.functional.normalize(q, dim=-1) for q in (a.quats, b.quats))
                dq = quaternion_multiply(qa, qb * torch.tensor([1.0, -1.0, -1.0, -1.0]))
                offsets.append(a.means - b.means)
                turns.append(dq[:, 1:] * torch.where(dq[:, :1] < 0, -1.0, 1.0))
        d, r = torch.stack(offsets).float().numpy(), torch.stack(turns).float().numpy()
        if max(np.abs(d).max(initial=0.0), np.abs(r).max(initial=0.0)) > 0:
            deformation, rotation = d, r
    a = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
    verts = a(vertices)
    return AnimatedAvatar(faces=avatar.head.faces.cpu().numpy().astype(np.int64), vertices=verts,
                          binding=g.binding.cpu().numpy().astype(np.int64), local_means=a(g.local_means),
                          log_scales=a(g.log_scales), quats=a(g.quats), opacity_logits=a(g.opacity_logits),
                          sh=a(g.sh), deformation=deformation, deformation_rotation=rotation, fps=float(fps),
                          camera=camera_hint(verts), meta=dict(meta or {}))


def write_animated(path: str | Path, anim: AnimatedAvatar) -> None:
    """Write ``anim`` as one ``.m4da`` file (atomically; layout in the module docstring)."""
    arrays = {"faces": anim.faces, "vertices": anim.vertices, "binding": anim.binding, "local_means": anim.local_means,
              "log_scales": anim.log_scales, "quats": anim.quats, "opacity_logits": anim.opacity_logits,
              "sh": anim.sh}
    if anim.deformation is not None:
        arrays["deformation"], arrays["deformation_rotation"] = anim.deformation, anim.deformation_rotation
    buffers, blobs, offset = {}, [], 0
    for name, arr in arrays.items():
        data = np.ascontiguousarray(arr, dtype=_NP[DTYPES[name]]).tobytes()
        buffers[name] = {"dtype": DTYPES[name], "shape": list(arr.shape), "offset": offset, "byte_length": len(data)}
        pad = -len(data) % 8
        blobs += [data, b"\0" * pad]
        offset += len(data) + pad
    F, N, _ = anim.vertices.shape
    header = {"format": FORMAT, "version": VERSION, "num_frames": F, "num_vertices": N,
              "num_faces": int(anim.faces.shape[0]), "num_gaussians": int(anim.binding.shape[0]),
              "sh_degree": int(round(math.sqrt(anim.sh.shape[1]))) - 1, "fps": anim.fps, "camera": anim.camera,
              "meta": anim.meta, "buffers": buffers}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(12 + len(text)) % 8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + struct.pack("<II", VERSION, len(text)) + text)
            for b in blobs:
                fh.write(b)


def read_animated(path: str | Path) -> AnimatedAvatar:
    """Read a ``.m4da`` file (float16 -> float32, uint32 -> int64); ValueError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no animated avatar file at {path}")
    raw = path.read_bytes()
    if raw[:4] != MAGIC or len(raw) < 12:
        raise Morph4DError(f"{path} is not a morph4d animated avatar (.m4da) file")
    version, length = struct.unpack_from("<II", raw, 4)
    if version != VERSION:
        raise Morph4DError(f"{path} is animated avatar format version {version}; this morph4d reads {VERSION}")
    try:
        header = json.loads(raw[12:12 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Morph4DError(f"{path}: the .m4da header is not JSON ({e})") from None
    if not isinstance(header, dict) or not {"buffers", "fps", "camera"} <= set(header):
        raise Morph4DError(f"{path}: the .m4da header lacks 'buffers', 'fps' or 'camera'")
    base = 12 + length

    def get(name):
        b = header["buffers"][name]
        if base + b["offset"] + b["byte_length"] > len(raw):
            raise Morph4DError(f"{path} is truncated (buffer '{name}')")
        arr = np.frombuffer(raw, _NP[b["dtype"]], int(np.prod(b["shape"])), base + b["offset"]).reshape(b["shape"])
        return arr.astype(np.int64) if b["dtype"] == "uint32" else arr.astype(np.float32)

    deformed = "deformation" in header["buffers"]
    try:
        return AnimatedAvatar(faces=get("faces"), vertices=get("vertices"), binding=get("binding"),
                              local_means=get("local_means"), log_scales=get("log_scales"), quats=get("quats"),
                              opacity_logits=get("opacity_logits"), sh=get("sh"),
                              deformation=get("deformation") if deformed else None,
                              deformation_rotation=get("deformation_rotation") if deformed else None,
                              fps=float(header["fps"]), camera=header["camera"], meta=header.get("meta", {}))
    except Morph4DError:
        raise
    except (KeyError, TypeError, ValueError) as e:   # a missing buffer, a bad dtype/shape/offset
        raise Morph4DError(f"{path}: a .m4da buffer is malformed ({type(e).__name__}: {e})") from None


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = _normalize(q).T
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def place(anim: AnimatedAvatar, frame: int) -> dict[str, np.ndarray]:
    """World Gaussians of ``frame`` from the file's arrays alone (docs/AVATAR_FORMAT.md, "Placement"): the
    numpy twin of the viewer's JavaScript.

    Returns means (G, 3), rotations (G, 3, 3) (world rotation matrices), scales (G, 3), covariances (G, 3, 3),
    opacities (G,), rgb (G, 3) (degree-0 colour).
    """
    if not 0 <= frame < anim.num_frames:
        raise Morph4DError(f"frame {frame} is outside the animation's {anim.num_frames} frames")
    v0, v1, v2 = (anim.vertices[frame][anim.faces[:, i]].astype(np.float64) for i in range(3))
    e0 = _normalize(v1 - v0)
    n = _normalize(np.cross(e0, v2 - v0))
    e2 = np.cross(e0, n)
    k = 0.5 * (np.linalg.norm(v1 - v0, axis=-1) + np.abs(((v2 - v0) * e2).sum(-1)))
    R_tri = np.stack([e0, n, e2], -1)[anim.binding]                # (G, 3, 3), columns e0 | n | e0 x n
    k, centroid = k[anim.binding], ((v0 + v1 + v2) / 3)[anim.binding]
    means = k[:, None] * np.einsum("gij,gj->gi", R_tri, anim.local_means) + centroid
    rot = R_tri @ _quat_to_matrix(anim.quats.astype(np.float64))
    if anim.deformation is not None:
        xyz = anim.deformation_rotation[frame].astype(np.float64)
        w = np.sqrt(np.clip(1 - (xyz ** 2).sum(-1, keepdims=True), 0, 1))
        means = means + anim.deformation[frame]
        rot = _quat_to_matrix(np.concatenate([w, xyz], -1)) @ rot
    scales = k[:, None] * np.exp(anim.log_scales.astype(np.float64))
    M = rot * scales[:, None, :]
    return {"means": means, "rotations": rot, "scales": scales, "covariances": M @ M.transpose(0, 2, 1),
            "opacities": 1 / (1 + np.exp(-anim.opacity_logits.astype(np.float64))),
            "rgb": np.maximum(anim.sh[:, 0].astype(np.float64) * SH_C0 + 0.5, 0.0)}


__all__ = ["AnimatedAvatar", "bake", "camera_hint", "place", "read_animated", "write_animated", "MAGIC", "VERSION"]
