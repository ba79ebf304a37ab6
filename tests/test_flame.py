"""FLAME loading: agreement with smplx's FLAME layer, chumpy-style pickles without chumpy, the restricted
unpickler, conversion to .npz, and error messages. Every FLAME file here is random, written in the test."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from morph4d.heads.base import HeadParams
from morph4d.heads.flame import FLAME_KEYS, convert_flame, load_flame

N, T, J = 5023, 9976, 5  # FLAME's vertex, triangle and joint counts
N_SMALL, T_SMALL = 300, 500  # a smaller random mesh where the real sizes do not matter (faster)
EYE_VERTICES = np.arange(100, 160)  # vertices skinned rigidly to the left (100..129) / right (130..159) eye


def random_flame_arrays(n: int = N, t: int = T, seed: int = 0) -> dict:
    """A random model in the official FLAME layout (float32-representable, as smplx casts to float32)
    with ``n`` vertices and ``t`` triangles."""
    rng = np.random.default_rng(seed)
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    weights = rng.dirichlet(np.ones(J), size=n)
    halved = weights[:, 3:] / 2  # move half the eye joints' weight to the root: their sum stays < 0.5
    weights[:, 3:] -= halved
    weights[:, 0] += halved.sum(axis=1)
    weights[EYE_VERTICES] = 0.0
    weights[EYE_VERTICES[:30], 3] = 1.0
    weights[EYE_VERTICES[30:], 4] = 1.0
    # Each joint regressed from 20 vertices with weights summing to 1, as FLAME's J_regressor rows do.
    rows = np.repeat(np.arange(J), 20)
    cols = rng.choice(n, size=J * 20, replace=False)
    vals = rng.dirichlet(np.ones(20), size=J).ravel()
    return {
        "v_template": f32(rng.normal(scale=0.05, size=(n, 3))),
        "f": rng.integers(0, n, size=(t, 3)).astype(np.uint32),
        "shapedirs": f32(rng.normal(scale=1e-3, size=(n, 3, 400))),
        "posedirs": f32(rng.normal(scale=1e-3, size=(n, 3, 36))),
        "J_regressor": scipy.sparse.csc_matrix((f32(vals), (rows, cols)), shape=(J, n)),
        "weights": f32(weights),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "bs_style": "lbs",  # extra keys of the official files are ignored
    }


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (the BINSTRING opcodes), the way the official Python 2
    FLAME pickles hold dict keys and numpy's raw array bytes; they load back through ``latin1``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(data)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + data if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_py2_str


def fake_chumpy_class(module: str, name: str) -> type:
    """A class that pickles under chumpy's module and class name; like chumpy's, its instances pickle their
    ``__dict__`` (where a ``Ch`` keeps its value under 'x')."""
    return type(name, (), {"__module__": module, "__qualname__": name})


def dump_chumpy_style(arrays: dict, path, protocol: int) -> None:
    """Write ``arrays`` the way the official files are: v_template, shapedirs, posedirs as chumpy ``Ch``
    objects (plus a derived chumpy expression under the unused key 'J'), all without chumpy installed.
    Protocol 2 mimics Python 2's output (Py2Pickler); other protocols are Python 3's own."""
    ch_module, ops_module = types.ModuleType("chumpy.ch"), types.ModuleType("chumpy.ch_ops")
    ch_module.Ch, ops_module.add = fake_chumpy_class("chumpy.ch", "Ch"), fake_chumpy_class("chumpy.ch_ops", "add")
    data = dict(arrays)
    for key in ("v_template", "shapedirs", "posedirs"):
        obj = ch_module.Ch()
        obj.__dict__.update(x=arrays[key], _dirty_vars={"x"}, _itr=None)
        data[key] = obj
    data["J"] = ops_module.add()
    data["J"].__dict__.update(a=data["v_template"], b=data["v_template"])
    with pytest.MonkeyPatch.context() as mp:  # the fake modules exist only while dumping
        mp.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
        mp.setitem(sys.modules, "chumpy.ch", ch_module)
        mp.setitem(sys.modules, "chumpy.ch_ops", ops_module)
        buf = io.BytesIO()
        (Py2Pickler(buf, protocol=2) if protocol == 2 else pickle.Pickler(buf, protocol=protocol)).dump(data)
    path.write_bytes(buf.getvalue())
    assert "chumpy.ch" not in sys.modules


@pytest.fixture(scope="module")
def smplx_folder(tmp_path_factory):
    """A full-size random FLAME_NEUTRAL.pkl plus the landmark file smplx's FLAME also reads."""
    pytest.importorskip("smplx")
    root = tmp_path_factory.mktemp("smplx_flame")
    with open(root / "FLAME_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(random_flame_arrays(), fh, protocol=2)
    rng = np.random.default_rng(1)
    with open(root / "flame_static_embedding.pkl", "wb") as fh:
        pickle.dump({"lmk_face_idx": rng.integers(0, T, size=51), "lmk_b_coords": rng.dirichlet(np.ones(3), 51)}, fh)
    return root


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    """Folder with a small random model as a plain FLAME_NEUTRAL.pkl and as a chumpy-style pickle."""
    root = tmp_path_factory.mktemp("flame")
    arrays = random_flame_arrays(N_SMALL, T_SMALL)
    with open(root / "FLAME_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(arrays, fh, protocol=2)
    dump_chumpy_style(arrays, root / "generic_model.pkl", protocol=2)
    return root, arrays


def random_params(batch: int, num_shape: int, num_expression: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = lambda n, scale: ((torch.rand(batch, n, generator=g) * 2 - 1) * scale).to(dtype)  # noqa: E731
    return HeadParams(shape=u(num_shape, 2.0), expression=u(num_expression, 2.0), jaw=u(3, 0.5), neck=u(3, 0.5),
                      eyes=u(6, 0.5), rotation=u(3, 0.5), translation=u(3, 0.1))


# float64 differs by a few 1e-10: smplx's Rodrigues takes the angle of (r + 1e-8), ours of r.
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-8), (torch.float32, 1e-5)])
def test_agrees_with_smplx(smplx_folder, dtype, tol):
    import smplx

    root = smplx_folder
    ref = smplx.FLAME(str(root), num_betas=100, num_expression_coeffs=50, batch_size=4, dtype=dtype,
                      use_face_contour=False)
    ours = load_flame(root / "FLAME_NEUTRAL.pkl", num_shape=100, num_expression=50).to(dtype)
    p = random_params(4, 100, 50, dtype)
    with torch.no_grad():
        expected = ref(betas=p.shape, expression=p.expression, global_orient=p.rotation, neck_pose=p.neck,
                       jaw_pose=p.jaw, leye_pose=p.eyes[:, :3], reye_pose=p.eyes[:, 3:],
                       transl=p.translation).vertices
        got = ours(p)
    assert got.dtype == dtype
    err = (got - expected).abs().max().item()
    print(f"max |ours - smplx| ({dtype}): {err:.3g}")
    assert err < tol
    # Left and right eye poses drive different vertices: swapping them must change the result.
    swapped = p.replace(eyes=p.eyes[:, [3, 4, 5, 0, 1, 2]])
    with torch.no_grad():
        assert (ours(swapped) - expected)[:, EYE_VERTICES].abs().max().item() > 1e-3


def test_model_arrays_and_groups(flame_files):
    root, arrays = flame_files
    model = load_flame(root / "FLAME_NEUTRAL.pkl", num_shape=10, num_expression=5)
    assert model.name == "flame" and model.num_shape == 10 and model.num_expression == 5
    sd = torch.as_tensor(arrays["shapedirs"], dtype=torch.float32)
    assert torch.equal(model.shapedirs, sd[:, :, :10])
    assert torch.equal(model.exprdirs, sd[:, :, 300:305])
    assert model.posedirs.shape == (36, N_SMALL * 3)
    assert torch.equal(model.joint_regressor, torch.as_tensor(arrays["J_regressor"].toarray(), dtype=torch.float32))
    assert model.vertex_groups["eyes"].tolist() == EYE_VERTICES.tolist()
    assert model.uvs is None and model.uv_faces is None


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_style_pickle_loads_without_chumpy(flame_files, tmp_path, protocol):
    root, arrays = flame_files
    path = root / "generic_model.pkl"
    if protocol != 2:  # protocol 0 builds objects through copyreg._reconstructor
        path = tmp_path / "generic_model.pkl"
        dump_chumpy_style(arrays, path, protocol)
    plain = load_flame(root / "FLAME_NEUTRAL.pkl").arrays()
    chumpy_style = load_flame(path).arrays()
    assert plain.keys() == chumpy_style.keys()
    for key in plain:
        np.testing.assert_array_equal(plain[key], chumpy_style[key], err_msg=key)


def test_chumpy_expression_without_value_needs_conversion(flame_files, tmp_path):
    _, arrays = flame_files
    ops_module = types.ModuleType("chumpy.ch_ops")
    ops_module.add = fake_chumpy_class("chumpy.ch_ops", "add")
    data = dict(arrays, shapedirs=ops_module.add())
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
        mp.setitem(sys.modules, "chumpy.ch_ops", ops_module)
        (tmp_path / "expr.pkl").write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(ValueError, match="'shapedirs' is a chumpy 'chumpy.ch_ops.add'.*needs converting"):
        load_flame(tmp_path / "expr.pkl")


def test_convert_then_load_npz_is_identical(flame_files, tmp_path):
    root, _ = flame_files
    out = convert_flame(root / "generic_model.pkl", tmp_path / "flame.npz")
    with np.load(out, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(FLAME_KEYS)
        assert data["shapedirs"].shape == (N_SMALL, 3, 400)
    from_pkl, from_npz = load_flame(root / "generic_model.pkl"), load_flame(out)
    p = random_params(3, 100, 50)
    assert torch.equal(from_pkl(p), from_npz(p))
    assert [f.name for f in tmp_path.iterdir()] == ["flame.npz"]  # no temporary file left behind


def test_uvs_from_texture_file(flame_files, tmp_path):
    root, _ = flame_files
    vt = np.random.default_rng(2).random((5118, 2))
    ft = np.random.default_rng(3).integers(0, 5118, size=(T_SMALL, 3))
    np.savez(tmp_path / "FLAME_texture.npz", vt=vt, ft=ft)
    model = load_flame(root / "FLAME_NEUTRAL.pkl", uv_path=tmp_path / "FLAME_texture.npz")
    assert model.uvs.shape == (5118, 2) and torch.equal(model.uv_faces, torch.as_tensor(ft))
    with pytest.raises(FileNotFoundError, match="FLAME_texture.npz"):
        load_flame(root / "FLAME_NEUTRAL.pkl", uv_path=tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", vt=vt)
    with pytest.raises(ValueError, match="'vt'.*'ft'"):
        load_flame(root / "FLAME_NEUTRAL.pkl", uv_path=tmp_path / "bad.npz")


class _RunsCode:
    """Pickles as a call to ``func(arg)``: what a malicious file would contain."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("make_payload, refused", [
    (lambda marker: _RunsCode(os.system, f"touch '{marker}'"), "system"),
    (lambda marker: _RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "exec"),
])
def test_forbidden_global_is_refused_and_not_run(tmp_path, protocol, make_payload, refused):
    marker = tmp_path / "pwned"
    data = {"v_template": np.zeros((3, 3)), "shapedirs": make_payload(marker)}
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
    with pytest.raises(pickle.UnpicklingError, match=f"refusing to unpickle global '.*{refused}'"):
        load_flame(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_missing_file_names_the_official_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pkl.*generic_model.pkl.*flame2023.pkl.*flame.is.tue.mpg.de"):
        load_flame(tmp_path / "nothing.pkl")


def test_corrupt_file(tmp_path):
    (tmp_path / "corrupt.pkl").write_bytes(b"\x00" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="corrupt.pkl is not a readable FLAME model.*generic_model.pkl"):
        load_flame(tmp_path / "corrupt.pkl")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04" + np.random.default_rng(1).bytes(4096))
    with pytest.raises(ValueError, match="corrupt.npz is not a readable FLAME model"):
        load_flame(tmp_path / "corrupt.npz")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="pickled list, not the dict of a FLAME model"):
        load_flame(tmp_path / "list.pkl")


def test_missing_keys_are_named(flame_files, tmp_path):
    _, arrays = flame_files
    data = {k: v for k, v in arrays.items() if k not in ("posedirs", "weights")}
    (tmp_path / "partial.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"partial.pkl is missing keys \['posedirs', 'weights'\].*needs keys "
                                         r"\('v_template', 'f', 'shapedirs'"):
        load_flame(tmp_path / "partial.pkl")


@pytest.mark.parametrize("key, value, message", [
    ("shapedirs", np.zeros((N_SMALL, 3, 50)), r"'shapedirs' has shape \(300, 3, 50\), expected \(300, 3, 400\)"),
    ("J_regressor", np.zeros((4, N_SMALL)), r"'J_regressor' has shape \(4, 300\), expected \(5, 300\)"),
    ("v_template", np.zeros(N_SMALL * 3), r"'v_template' has shape \(900,\), expected \('N', 3\)"),
    ("kintree_table", np.array([[-1, 0, 0, 1, 1], [0, 1, 2, 3, 4]]), "not FLAME's tree"),
    ("weights", np.full((N_SMALL, 5), "a"), "'weights' holds <U1 values, expected numbers"),
])
def test_malformed_arrays(flame_files, tmp_path, key, value, message):
    _, arrays = flame_files
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(dict(arrays, **{key: value})))
    with pytest.raises(ValueError, match=message):
        load_flame(tmp_path / "bad.pkl")


def test_component_counts_out_of_range(flame_files):
    root, _ = flame_files
    with pytest.raises(ValueError, match=r"num_shape must be in \[0, 300\].*got 301"):
        load_flame(root / "FLAME_NEUTRAL.pkl", num_shape=301)
    with pytest.raises(ValueError, match=r"num_expression must be in \[0, 100\].*got -1"):
        load_flame(root / "FLAME_NEUTRAL.pkl", num_expression=-1)


def test_head_params_with_wrong_size_names_expected_shape(flame_files):
    root, _ = flame_files
    model = load_flame(root / "FLAME_NEUTRAL.pkl", num_shape=20, num_expression=10)
    p = model.zero_params((2,))
    with pytest.raises(ValueError, match=r"HeadParams.expression must have shape \(\.\.\., 10\), got \(2, 50\)"):
        model(p.replace(expression=torch.zeros(2, 50)))
    with pytest.raises(ValueError, match=r"HeadParams.eyes must have shape \(\.\.\., 6\), got \(2, 3\)"):
        model(p.replace(eyes=torch.zeros(2, 3)))
