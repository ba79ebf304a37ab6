"""FLAME (Li et al. 2017, "Learning a model of facial shape and expression from 4D scans") loaded from
the user's own official files, without chumpy and without running pickled code.

FLAME is licensed, so morph4d never ships it: the user registers at https://flame.is.tue.mpg.de and
downloads FLAME 2020 (``generic_model.pkl``) or FLAME 2023 (``flame2023.pkl`` /
``flame2023_no_jaw.pkl``), and optionally the texture space (``FLAME_texture.npz``) for UVs.
Those pickles come from Python 2 and hold numpy arrays, scipy.sparse matrices and chumpy objects.
``_FlameUnpickler`` resolves only an explicit allow-list of globals; chumpy and scipy.sparse classes
become the inert ``_Pickled`` record, from which the arrays are pulled out afterwards.

``convert_flame`` writes the same arrays once as a plain ``.npz`` (no pickles; smplx can read it too),
which ``load_flame`` accepts as well.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

from morph4d.errors import Morph4DError
from morph4d.heads.base import PARENTS
from morph4d.heads.model import HeadModel
from morph4d.io import atomic_path
from morph4d.validate import read_npz

# FLAME's shapedirs hold 300 identity components followed by 100 expression components (Li et al. §3).
NUM_SHAPE_TOTAL, NUM_EXPRESSION_TOTAL = 300, 100
FLAME_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
OFFICIAL_FILES = ("the official FLAME 2020 'generic_model.pkl' or FLAME 2023 'flame2023.pkl' (download from "
                  "https://flame.is.tue.mpg.de after registering), or an .npz made from it by "
                  "'morph4d flame convert'")

# Globals that only rebuild plain data: numpy arrays, dtypes and scalars (both numpy 1 and 2 module
# spellings), sets (chumpy's bookkeeping), bytes written by Python 3 at protocol 2 (``_codecs.encode``),
# and ``copyreg._reconstructor``, which protocol 0/1 uses to create objects of already-allowed classes.
_SAFE_GLOBALS = {
    *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *((m, n) for m in ("builtins", "__builtin__") for n in ("set", "frozenset", "object")),
    ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"),
}
_SPARSE_MODULES = ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr")
_SPARSE_CLASSES = ("csc_matrix", "csr_matrix", "csc_array", "csr_array")


class _Pickled:
    """Inert stand-in for a chumpy or scipy.sparse object: keeps the pickled state, runs nothing."""

    source = ""  # "module.Class" it stands in for, set per stand-in class
    state = None

    def __setstate__(self, state):
        self.state = state


class _RefusedGlobal(pickle.UnpicklingError, Morph4DError):
    """A global outside the allow-list (nothing of it ran); kept distinct from a corrupt file's errors, and a
    user error: the command says the file was refused and exits 2."""


class _FlameUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside the allow-list above."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy" or (module in _SPARSE_MODULES and name in _SPARSE_CLASSES):
            return type(name, (_Pickled,), {"source": f"{module}.{name}"})
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"refusing to unpickle global '{module}.{name}': a FLAME file holds only numpy "
                             f"arrays, scipy.sparse matrices and chumpy arrays")


def _to_array(value, key: str, path: Path) -> np.ndarray:
    """A stored value as a dense array: chumpy ``Ch`` gives its value ``x``, sparse matrices densify."""
    if not isinstance(value, _Pickled):
        return np.asarray(value)
    state = value.state if isinstance(value.state, dict) else {}
    if value.source.startswith("scipy."):
        if not {"data", "indices", "indptr"} <= state.keys():
            raise Morph4DError(f"{path}: '{key}' is a scipy.sparse matrix without data/indices/indptr")
        fmt = value.source.rsplit(".", 1)[1][:3]  # "csc" or "csr"
        shape = state.get("_shape", state.get("shape"))
        matrix = {"csc": scipy.sparse.csc_matrix, "csr": scipy.sparse.csr_matrix}[fmt]
        return matrix((state["data"], state["indices"], state["indptr"]), shape=shape).toarray()
    if "x" in state:  # a chumpy Ch pickles its value as state['x']
        return _to_array(state["x"], key, path)
    raise Morph4DError(f"{path}: '{key}' is a chumpy '{value.source}' expression, not a stored array; the file "
                       f"needs converting: load it once where chumpy is installed, replace each chumpy value "
                       f"by its '.r' array, and save plain numpy arrays")


def _read_raw(path: Path) -> dict:
    """The key -> value mapping stored in a FLAME pickle or converted .npz (values not yet converted)."""
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"  # .npz files are zip archives
    try:
        if is_zip:
            return {k: v for k, v in read_npz(path, "FLAME model").items() if k in FLAME_KEYS}
        with open(path, "rb") as fh:
            data = _FlameUnpickler(fh, encoding="latin1").load()  # latin1: Python 2 strings and arrays
    except _RefusedGlobal:
        raise
    except Exception as e:  # a corrupt file can fail inside pickle or numpy in many ways
        raise Morph4DError(f"{path} is not a readable FLAME model ({type(e).__name__}: {e}); expected "
                           f"{OFFICIAL_FILES} with keys {FLAME_KEYS}") from e
    if not isinstance(data, dict):
        raise Morph4DError(f"{path} holds a pickled {type(data).__name__}, not the dict of a FLAME model; "
                           f"expected {OFFICIAL_FILES}")
    return data


def read_flame_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The FLAME arrays (``FLAME_KEYS``) of an official pickle or converted .npz, dense and validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FLAME model file not found: {path}; expected {OFFICIAL_FILES}")
    raw = _read_raw(path)
    missing = [k for k in FLAME_KEYS if k not in raw]
    if missing:
        raise Morph4DError(f"{path} is missing keys {missing}; a FLAME model needs keys {FLAME_KEYS} "
                           f"(is it {OFFICIAL_FILES}?)")
    arrays = {k: _to_array(raw[k], k, path) for k in FLAME_KEYS}
    v = arrays["v_template"]
    n = v.shape[0] if v.ndim == 2 else -1  # vertex count (5023 for FLAME)
    nj = len(PARENTS)
    expected = {"v_template": (n, 3), "f": (None, 3), "shapedirs": (n, 3, NUM_SHAPE_TOTAL + NUM_EXPRESSION_TOTAL),
                "posedirs": (n, 3, 9 * (nj - 1)),  # one flattened 3x3 rotation per non-root joint
                "J_regressor": (nj, n), "weights": (n, nj), "kintree_table": (2, nj)}
    for key, want in expected.items():
        got = arrays[key].shape
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            shown = tuple("any" if w is None else "N" if w == -1 else w for w in want)
            raise Morph4DError(f"{path}: '{key}' has shape {got}, expected {shown}")
        if arrays[key].dtype.kind not in "biuf":
            raise Morph4DError(f"{path}: '{key}' holds {arrays[key].dtype} values, expected numbers")
    # kintree_table = [parents, joint ids]; the root's parent is stored as -1 or as uint32 2**32 - 1.
    kintree = arrays["kintree_table"]
    if tuple(kintree[0, 1:]) != PARENTS[1:] or tuple(kintree[1]) != tuple(range(len(PARENTS))):
        raise Morph4DError(f"{path}: kintree_table {kintree.tolist()} is not FLAME's tree (parents {PARENTS}: "
                           f"global -> neck -> jaw, left eye, right eye)")
    return arrays


def _read_uvs(uv_path: Path, num_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """``vt`` (M, 2) and ``ft`` (T, 3) from the official FLAME texture-space file."""
    if not uv_path.is_file():
        raise FileNotFoundError(f"FLAME UV file not found: {uv_path}; expected the official 'FLAME_texture.npz' "
                                f"(keys 'vt', 'ft') from the FLAME texture space at https://flame.is.tue.mpg.de")
    try:
        data = read_npz(uv_path, "FLAME texture file")
        vt, ft = data["vt"], data["ft"]
    except Morph4DError:
        raise
    except Exception as e:  # not an .npz, missing keys, or pickled object arrays
        raise Morph4DError(f"{uv_path} is not a readable FLAME texture file ({type(e).__name__}: {e}); expected "
                           f"'FLAME_texture.npz' with arrays 'vt' (M, 2) and 'ft' ({num_faces}, 3)") from e
    if vt.ndim != 2 or vt.shape[1] != 2 or ft.shape != (num_faces, 3) or ft.min() < 0 or ft.max() >= len(vt):
        raise Morph4DError(f"{uv_path}: 'vt' {vt.shape} and 'ft' {ft.shape} should be (M, 2) and ({num_faces}, 3) "
                           f"with indices into vt")
    return vt, ft


def load_flame(path: str | Path, num_shape: int = 100, num_expression: int = 50,
               uv_path: str | Path | None = None) -> HeadModel:
    """FLAME as a ``HeadModel`` named "flame".

    path:           the official FLAME 2020/2023 pickle, or an .npz written by ``convert_flame``.
    num_shape:      identity components kept, the first ``num_shape`` of FLAME's 300.
    num_expression: expression components kept, the first ``num_expression`` of FLAME's 100.
    uv_path:        the official ``FLAME_texture.npz`` (``vt``, ``ft``); without it ``uvs`` and
                    ``uv_faces`` are None, since the FLAME model files carry no UVs.
    The "eyes" vertex group holds FLAME's eyeballs: vertices skinned mostly (> 0.5) to the eye joints.
    """
    for what, value, total in (("num_shape", num_shape, NUM_SHAPE_TOTAL),
                               ("num_expression", num_expression, NUM_EXPRESSION_TOTAL)):
        if not 0 <= value <= total:
            raise Morph4DError(f"{what} must be in [0, {total}] (FLAME has {total} such components), got {value}")
    a = read_flame_arrays(path)
    uvs = uv_faces = None
    if uv_path is not None:
        uvs, uv_faces = _read_uvs(Path(uv_path), len(a["f"]))
    # FLAME Eq. 2: T_P = T + B_S(beta; S) + B_P(theta; P) + B_E(psi; E), with S and E both stored in
    # shapedirs: columns [0, 300) are identity, [300, 400) expression.
    shapedirs = a["shapedirs"][:, :, :num_shape]
    exprdirs = a["shapedirs"][:, :, NUM_SHAPE_TOTAL:NUM_SHAPE_TOTAL + num_expression]
    # Pose blendshapes B_P: (N, 3, 36) -> (36, N*3), multiplied by the flattened (R_k - I) of the 4
    # non-root joints, exactly as FLAME's and smplx's code reshape them.
    posedirs = a["posedirs"].reshape(-1, a["posedirs"].shape[-1]).T
    eyes = np.flatnonzero(a["weights"][:, 3] + a["weights"][:, 4] > 0.5)  # joints 3, 4: left, right eye
    return HeadModel("flame", a["v_template"], a["f"].astype(np.int64), shapedirs, exprdirs, a["J_regressor"],
                     a["weights"], posedirs=posedirs, uvs=uvs, uv_faces=uv_faces, vertex_groups={"eyes": eyes})


def convert_flame(pkl_path: str | Path, out_npz_path: str | Path) -> Path:
    """Convert an official FLAME pickle once into a plain .npz (all 300 + 100 components kept, dense
    ``J_regressor``, FLAME's own key names), written atomically. Returns the output path."""
    arrays = read_flame_arrays(pkl_path)
    out = Path(out_npz_path)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return out
