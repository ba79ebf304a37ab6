"""Standard 3D Gaussian splatting ``.ply`` files (the layout of Kerbl et al.'s reference code, which common
3DGS viewers open): one frame of an avatar as static Gaussians.

Per Gaussian, float32, binary little endian: ``x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity
scale_0..2 rot_0..3``; ``opacity`` is the logit, ``scale_*`` the log of the standard deviations, ``rot_*`` the
quaternion w, x, y, z, ``f_dc`` the degree-0 SH coefficients and ``f_rest`` the others channel-major
(all R coefficients, then G, then B), normals zero.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from morph4d.avatar.gaussians.binding import WorldGaussians
from morph4d.errors import Morph4DError
from morph4d.io import atomic_path


def _columns(num_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(num_rest)] + ["opacity", "scale_0", "scale_1", "scale_2"]
            + [f"rot_{i}" for i in range(4)])


def write_ply(path: str | Path, g: WorldGaussians) -> None:
    """Write activated world Gaussians as a standard 3DGS .ply (atomically)."""
    G, K, _ = g.sh.shape
    eps = 1e-6
    op = g.opacities.clamp(eps, 1 - eps)
    data = torch.cat([g.means, torch.zeros(G, 3), g.sh[:, 0], g.sh[:, 1:].transpose(1, 2).reshape(G, -1),
                      torch.log(op / (1 - op))[:, None], g.scales.clamp(min=1e-12).log(),
                      torch.nn.functional.normalize(g.quats, dim=-1)], dim=1).detach().cpu().numpy()
    cols = _columns(3 * (K - 1))
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {G}\n" + \
        "".join(f"property float {c}\n" for c in cols) + "end_header\n"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(np.ascontiguousarray(data, dtype="<f4").tobytes())


def read_ply(path: str | Path) -> WorldGaussians:
    """Read a standard 3DGS .ply (float properties, binary little endian) back into activated Gaussians."""
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise Morph4DError(f"{path} is not a .ply file")
    header = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise Morph4DError(f"{path}: only binary little-endian .ply is supported")
    count = next(int(h.split()[2]) for h in header if h.startswith("element vertex"))
    cols = [h.split()[2] for h in header if h.startswith("property float")]
    need = {"x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0"}
    if need - set(cols):
        raise Morph4DError(f"{path} lacks 3DGS properties {sorted(need - set(cols))}")
    arr = np.frombuffer(raw, dtype="<f4", count=count * len(cols), offset=end + len("end_header\n"))
    t = torch.from_numpy(arr.reshape(count, len(cols)).copy())
    col = {c: i for i, c in enumerate(cols)}
    pick = lambda names: t[:, [col[n] for n in names]]  # noqa: E731
    rest = sorted((c for c in cols if c.startswith("f_rest_")), key=lambda c: int(c.split("_")[-1]))
    K = 1 + len(rest) // 3
    sh = torch.cat([pick(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None],
                    pick(rest).reshape(count, 3, K - 1).transpose(1, 2)], dim=1)
    return WorldGaussians(means=pick(["x", "y", "z"]), quats=pick([f"rot_{i}" for i in range(4)]),
                          scales=pick(["scale_0", "scale_1", "scale_2"]).exp(),
                          opacities=torch.sigmoid(t[:, col["opacity"]]), sh=sh)
