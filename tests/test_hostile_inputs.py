"""Broken and hostile input files on every command that reads them.

The contract (``morph4d.errors``): for a broken or hostile file, ``morph4d.cli.main(argv)`` returns 2, prints
exactly one line to stderr, starting with ``error: `` (no traceback, no ``internal error``), and leaves the
output path absent (or unchanged when it existed before); a crafted FLAME pickle runs no code.

Formats: the tracked reference .npz, the animation .npz, FLAME files, model folders, dataset sequences, avatar
folders and generated-videos folders. Every broken file is made here, in tmp_path, from small valid inputs
built once per module (a test copies before it breaks anything). Positive controls check that the valid
inputs pass each command, so a failure is the corruption's doing.

Every command runs for real (no stand-ins for morph4d's own code): a hostile input is refused before the
expensive stages, so each case costs the command's input checks only.
Python warnings are printed to stderr as the command line would print them, so they count as extra lines.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import shutil
import struct
import sys
import warnings
import zipfile
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from morph4d.cli import main

RES = 32          # pixels of the reference, the dataset and the generated videos
ANIM_FRAMES = 25  # the 'small' sampling plan's frame count: a shorter animation would be refused for that
STEPS = ["--key-steps", "1", "--other-steps", "1"]
QUALITY = ["quality", "--identities", "1", "--ablation-identities", "0", "--ae-windows", "1", "--res", str(RES),
           *STEPS]
TRAIN = ["train", "--preset", "tiny", "--max-steps", "1"]


# ---------------------------------------------------------------------------------------------------
# running a command and checking the contract
# ---------------------------------------------------------------------------------------------------

# the warning categories Python's command line does not show by default
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def run(argv, capsys) -> tuple[int, str]:
    """``morph4d ARGV`` in this process: (exit status, stderr incl. warnings)."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for category in HIDDEN_WARNINGS:
            warnings.simplefilter("ignore", category)
        code = main([str(a) for a in argv])
    for w in caught:
        sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    return code, capsys.readouterr().err


def snapshot(path: Path):
    """What is at ``path``: None, a file's bytes, or a folder's (relative path, bytes) list."""
    if not os.path.lexists(path):
        return None
    if path.is_dir():
        return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))
    return path.read_bytes() if path.is_file() else "other"


def assert_refused(argv, capsys, outputs=(), markers=()):
    """The contract of the module docstring; every violation is named in one assertion message."""
    outputs = [Path(p) for p in outputs]
    before = {p: snapshot(p) for p in outputs}
    code, err = run(argv, capsys)
    problems = [f"the crafted pickle ran code: {m} exists" for m in markers if os.path.lexists(m)]
    if code != 2:
        problems.append(f"exit status {code!r}, expected 2")
    if not err.startswith("error: "):
        problems.append("stderr does not start with 'error: '")
    if err.count("\n") != 1:
        problems.append(f"{err.count(chr(10))} lines on stderr, expected 1")
    if "Traceback" in err or "internal error" in err:
        problems.append("a traceback / internal error on stderr")
    problems += [f"output {p} was {'created' if before[p] is None else 'changed'}" for p in outputs
                 if snapshot(p) != before[p]]
    head = "\n    ".join(err.splitlines()[:3])
    assert not problems, (f"{'; '.join(problems)}\n  command: morph4d {' '.join(map(str, argv))}\n  exit: {code!r}\n"
                          f"  stderr:\n    {head}")


def assert_accepted(argv, capsys, expected=0):
    """Positive control: the valid input passes."""
    code, err = run(argv, capsys)
    assert code == expected, f"morph4d {' '.join(map(str, argv))}: exit {code!r}\n{err[-3000:]}"


# ---------------------------------------------------------------------------------------------------
# writing broken files
# ---------------------------------------------------------------------------------------------------

def npz_arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def npz_with_huge_member(path: Path, arrays: dict, key: str, shape: tuple, dtype=np.uint8) -> None:
    """``arrays`` as an .npz whose ``key`` member declares ``shape`` in a valid .npy header but holds 16 bytes."""
    with zipfile.ZipFile(path, "w") as zf:
        for k, a in arrays.items():
            if k == key:
                continue
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
            zf.writestr(f"{k}.npy", buf.getvalue())
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                   "shape": shape})
        buf.write(b"\0" * 16)
        zf.writestr(f"{key}.npy", buf.getvalue())


def truncate(path: Path, src: Path) -> None:
    data = src.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def garbage(path: Path, n: int = 4096) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(n))


def symlink_to_nowhere(path: Path) -> None:
    os.symlink(path.parent / "nowhere" / path.name, path)


def png_header_only(width: int, height: int) -> bytes:
    """A minimal RGBA PNG whose IHDR declares ``width`` x ``height`` (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def replace_by_dir(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.mkdir()


class RunsCode:
    """Pickles as a call ``func(*args)``: what a malicious file contains."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# ---------------------------------------------------------------------------------------------------
# valid inputs, built once per module
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def head():
    from morph4d.heads.builtin import load_builtin_head
    return load_builtin_head()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    from morph4d.models.folder import init_models
    return init_models(tmp_path_factory.mktemp("hostile_models") / "models", "tiny", "tiny", seed=0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, head) -> Path:
    from test_generate import make_reference
    path = tmp_path_factory.mktemp("hostile_reference") / "ref.npz"
    make_reference(head, RES).save(path)
    return path


@pytest.fixture(scope="module")
def animation(tmp_path_factory, head) -> Path:
    from morph4d.heads.animation import builtin_animation
    path = tmp_path_factory.mktemp("hostile_animation") / "anim.npz"
    builtin_animation("talk", head, ANIM_FRAMES).save(path)
    return path


@pytest.fixture(scope="module")
def flame(tmp_path_factory) -> Path:
    from test_flame import N_SMALL, T_SMALL, random_flame_arrays
    path = tmp_path_factory.mktemp("hostile_flame") / "generic_model.pkl"
    with open(path, "wb") as fh:
        pickle.dump(random_flame_arrays(N_SMALL, T_SMALL), fh, protocol=2)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, str]:
    """(dataset folder, sequence name): 1 identity, 3 views (the tiny training preset's most) x 5 frames."""
    from morph4d.data.synth import SynthConfig, synthesize
    from morph4d.threads import torch_threads
    root = tmp_path_factory.mktemp("hostile_dataset") / "ds"
    with torch_threads(1):
        names = synthesize(SynthConfig(out=str(root), identities=1, views=3, frames=5, resolution=RES,
                                       progress=False), log=lambda *_: None)
    return root, names[0]


@pytest.fixture(scope="module")
def generated(tmp_path_factory, head) -> Path:
    """A generated-videos folder (morph4d.generation.videos): 2 views x 3 frames of the head."""
    from morph4d.cameras import orbit_cameras
    from morph4d.generation.videos import write_videos
    from morph4d.heads.animation import builtin_animation
    from morph4d.heads.builtin import vertex_colors
    from morph4d.mesh.shade import shade_mesh
    root = tmp_path_factory.mktemp("hostile_generated") / "gen"
    T = 3
    az, el = torch.tensor([-15.0, 15.0]), torch.tensor([0.0, 5.0])
    cams = orbit_cameras(az, el, 0.75, 26.0, RES, RES, target=(0, -0.01, 0))
    params = builtin_animation("talk", head, T).params
    with torch.no_grad():
        verts = head(params)
        videos = [shade_mesh(verts, head.faces, vertex_colors(head), cams[[v] * T])[0] for v in range(2)]
    write_videos(root, videos, cams, az, el, torch.tensor([True, False]), params, "builtin", 25.0, {})
    return root


# ---------------------------------------------------------------------------------------------------
# positive controls: the valid inputs pass every command line used below
# ---------------------------------------------------------------------------------------------------

def test_valid_inputs_load(head, models, reference, animation, flame, dataset, generated, fitted_avatar):
    from morph4d.avatar.fit import load_fit_data
    from morph4d.avatar.model import load_avatar
    from morph4d.data.format import read_sequence
    from morph4d.generation.reference import load_reference
    from morph4d.heads.animation import load_animation
    from morph4d.heads.flame import load_flame
    from morph4d.models.folder import load_models
    assert load_reference(reference, head).image.shape == (3, RES, RES)
    assert load_animation(animation, head).num_frames == ANIM_FRAMES
    assert load_flame(flame).num_expression > 0
    load_models(models)
    read_sequence(dataset[0] / dataset[1], check_images=True)
    assert load_fit_data(generated).images.shape[:2] == (2, 3)
    assert len(load_avatar(fitted_avatar).gaussians) > 0


@pytest.mark.parametrize("command", ["pack", "train", "reference", "render", "export", "head_info", "flame_convert",
                                     "animation_export"])
def test_valid_inputs_pass(command, capsys, tmp_path, models, animation, flame, dataset, fitted_avatar):
    """The cheap commands run whole on the valid inputs; the loaders of the others accept them (test above)."""
    ds, seq = dataset
    argv, expected = {
        "pack": (["model", "pack", "--mmvdm", models / "mmvdm", "--vae", models / "vae", "--out", tmp_path / "o"], 0),
        "train": (TRAIN + ["--data", ds, "--init", models / "mmvdm", "--out", tmp_path / "o"], 0),
        "reference": (["reference", "--sequence", ds / seq, "--out", tmp_path / "r.npz"], 0),
        "render": (["render", fitted_avatar, "--animation", animation, "--out", tmp_path / "x.mp4", "--frames", 2,
                    "--res", 16], 0),
        "export": (["export", fitted_avatar, "--animation", animation, "--out", tmp_path / "x.ply"], 0),
        "head_info": (["head", "info", "--head", "flame", "--flame-path", flame], 0),
        "flame_convert": (["flame", "convert", flame, tmp_path / "f.npz"], 0),
        "animation_export": (["animation", "export", "talk", tmp_path / "a.npz", "--head", "flame", "--flame-path",
                              flame, "--frames", 3], 0),
    }[command]
    assert_accepted(argv, capsys, expected)


# ---------------------------------------------------------------------------------------------------
# 1. tracked reference .npz (generate --reference, avatar --reference)
# ---------------------------------------------------------------------------------------------------

def _reference_edit(**changes):
    def make(path: Path, valid: Path) -> None:
        arrays = npz_arrays(valid)
        for key, change in changes.items():
            arrays[key] = change(arrays[key].copy()) if callable(change) else change
        save_npz(path, arrays)
    return make


def _set(index, value):
    def change(a):
        a[index] = value
        return a
    return change


def _renamed_keys(path: Path, valid: Path) -> None:
    save_npz(path, {("picture" if k == "image" else "camera_K" if k == "K" else k): a
                    for k, a in npz_arrays(valid).items()})


def _huge_image(path: Path, valid: Path) -> None:
    npz_with_huge_member(path, npz_arrays(valid), "image", (20000, 20000, 3))


def _pickled_image(path: Path, valid: Path) -> None:
    arrays = npz_arrays(valid)
    arrays["image"] = np.array([{"not": "an image"}, None], dtype=object)
    save_npz(path, arrays)   # np.savez pickles object arrays


REFERENCE_CASES = {
    "empty_file": lambda path, valid: path.write_bytes(b""),
    "truncated": truncate,
    "text": lambda path, valid: path.write_text("this is not an npz file\n"),
    "wrong_keys": _renamed_keys,
    "image_2d": _reference_edit(image=lambda a: a[..., 0]),
    "image_rgba": _reference_edit(image=lambda a: np.concatenate([a, np.ones_like(a[..., :1])], -1)),
    "expression_wrong_size": _reference_edit(expression=lambda a: a[..., :7]),
    "nan_expression": _reference_edit(expression=_set(0, np.nan)),
    "nan_image": _reference_edit(image=_set((0, 0, 0), np.nan)),
    "inf_K": _reference_edit(K=_set((0, 0), np.inf)),
    "zero_R": _reference_edit(R=lambda a: np.zeros_like(a)),
    "non_orthonormal_R": _reference_edit(R=lambda a: 2 * np.eye(3, dtype=a.dtype)),
    "image_out_of_range": _reference_edit(image=lambda a: np.full_like(a, 3.0, dtype=np.float32)),
    "version_99": _reference_edit(version=np.array(99)),
    "huge_image_header": _huge_image,
    "symlink_to_nowhere": lambda path, valid: symlink_to_nowhere(path),
    "directory": lambda path, valid: path.mkdir(),
    "pickled_object_array": _pickled_image,
}


@pytest.mark.parametrize("command", ["generate", "avatar"])
@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_broken_reference(case, command, capsys, tmp_path, models, reference):
    bad = tmp_path / "ref.npz"
    REFERENCE_CASES[case](bad, reference)
    out = tmp_path / "out"
    argv = [command, "--reference", bad, "--model", models, *STEPS, "--out", out]
    if command == "avatar":
        argv += ["--fit-iterations", "1"]
    assert_refused(argv, capsys, [out])


# ---------------------------------------------------------------------------------------------------
# 2. animation .npz (generate / render / export / demo --animation)
# ---------------------------------------------------------------------------------------------------

def _animation_edit(**changes):
    return _reference_edit(**changes)   # the same: load the valid file's arrays, change some, save


def _animation_pickled(path: Path, valid: Path) -> None:
    arrays = npz_arrays(valid)
    arrays["expression"] = np.array([[1.0, "x"], None], dtype=object)
    save_npz(path, arrays)


ANIMATION_CASES = {
    "empty_file": lambda path, valid: path.write_bytes(b""),
    "truncated": truncate,
    "text": lambda path, valid: path.write_text("this is not an npz file\n"),
    "wrong_keys": lambda path, valid: save_npz(path, {f"x_{k}": a for k, a in npz_arrays(valid).items()}),
    "expression_wrong_width": _animation_edit(expression=lambda a: a[:, :7]),
    "jaw_1d": _animation_edit(jaw=lambda a: a[:, 0]),
    "frame_counts_differ": _animation_edit(expression=lambda a: a[:-1]),
    "zero_frames": _animation_edit(**{k: (lambda a: a[:0]) for k in ("expression", "jaw", "neck", "eyes",
                                                                     "rotation", "translation")}),
    "nan_expression": _animation_edit(expression=_set((3, 0), np.nan)),
    "inf_jaw": _animation_edit(jaw=_set((3, 0), np.inf)),
    "nan_translation": _animation_edit(translation=_set((0, 2), np.nan)),
    "negative_fps": _animation_edit(fps=np.array(-25.0)),
    "zero_fps": _animation_edit(fps=np.array(0.0)),
    "nan_fps": _animation_edit(fps=np.array(np.nan)),
    "head_model_flame": _animation_edit(head_model=np.array("flame")),
    "version_99": _animation_edit(version=np.array(99)),
    "symlink_to_nowhere": lambda path, valid: symlink_to_nowhere(path),
    "directory": lambda path, valid: path.mkdir(),
    "pickled_object_array": _animation_pickled,
}


@pytest.mark.parametrize("command", ["generate", "render", "export", "demo"])
@pytest.mark.parametrize("case", ANIMATION_CASES)
def test_broken_animation(case, command, capsys, tmp_path, models, reference, animation, fitted_avatar):
    bad = tmp_path / "anim.npz"
    ANIMATION_CASES[case](bad, animation)
    argv, out = {
        "generate": (["generate", "--reference", reference, "--model", models, *STEPS], tmp_path / "out"),
        "render": (["render", fitted_avatar, "--frames", "2", "--res", "16"], tmp_path / "x.mp4"),
        "export": (["export", fitted_avatar], tmp_path / "x.ply"),
        "demo": (["demo", "--no-avatar", "--res", str(RES)], tmp_path / "out"),
    }[command]
    assert_refused(argv + ["--animation", bad, "--out", out], capsys, [out])


# ---------------------------------------------------------------------------------------------------
# 3. FLAME files (head info, flame convert, demo, animation export, generate: --flame-path)
# ---------------------------------------------------------------------------------------------------

MARKER = "pwned"   # a file the crafted pickles would create, beside the hostile file


def _pickle(obj):
    def make(path: Path, valid: Path) -> None:
        path.write_bytes(pickle.dumps(obj(path.parent / MARKER) if callable(obj) else obj, protocol=2))
    return make


FLAME_CASES = {
    "empty_file": lambda path, valid: path.write_bytes(b""),
    "truncated_pickle": truncate,
    "text": lambda path, valid: path.write_text("this is not a FLAME model\n"),
    "pickled_list": _pickle([1, 2, 3]),
    "pickle_runs_os_system": _pickle(lambda marker: {"v_template": RunsCode(os.system, f"touch '{marker}'")}),
    "pickle_runs_builtins_open": _pickle(lambda marker: RunsCode(builtins.open, str(marker), "w")),
    "pickle_runs_exec": _pickle(lambda marker: {"f": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()")}),
    "npz_wrong_keys": lambda path, valid: save_npz(path.with_suffix(".npz"), {"vertices": np.zeros((3, 3)),
                                                                              "faces": np.zeros((1, 3), int)}),
    "directory": lambda path, valid: path.mkdir(),
}


@pytest.mark.parametrize("command", ["head_info", "flame_convert", "demo", "animation_export", "generate"])
@pytest.mark.parametrize("case", FLAME_CASES)
def test_broken_flame_file(case, command, capsys, tmp_path, models, reference, flame):
    bad = tmp_path / "generic_model.pkl"
    FLAME_CASES[case](bad, flame)
    if case == "npz_wrong_keys":
        bad = bad.with_suffix(".npz")
    flame_args = ["--head", "flame", "--flame-path", bad]
    argv, outputs = {
        "head_info": (["head", "info", *flame_args], []),
        "flame_convert": (["flame", "convert", bad, tmp_path / "flame.npz"], [tmp_path / "flame.npz"]),
        "demo": (["demo", *flame_args, "--no-avatar", "--frames", "3", "--res", str(RES), "--out", tmp_path / "out"],
                 [tmp_path / "out"]),
        "animation_export": (["animation", "export", "talk", tmp_path / "a.npz", *flame_args, "--frames", "3"],
                             [tmp_path / "a.npz"]),
        "generate": (["generate", "--reference", reference, "--model", models, *STEPS, *flame_args,
                      "--out", tmp_path / "out"], [tmp_path / "out"]),
    }[command]
    assert_refused(argv, capsys, outputs, markers=[tmp_path / MARKER])


# ---------------------------------------------------------------------------------------------------
# 4. model folders (generate / avatar / quality --model, model pack --mmvdm --vae, train --init)
# ---------------------------------------------------------------------------------------------------

def _config(root: Path) -> dict:
    return json.loads((root / "mmvdm" / "config.json").read_text())


def _write_config(root: Path, config) -> None:
    (root / "mmvdm" / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))


def _emptied(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


def _other_preset_config(root: Path) -> None:
    from morph4d.models.mmvdm import MMVDMConfig
    _write_config(root, {"model": "MMVDM", **asdict(MMVDMConfig.preset("small"))})


MODEL_CASES = {
    "missing_folder": lambda root: shutil.rmtree(root),
    "empty_folder": _emptied,
    "mmvdm_folder_empty": lambda root: _emptied(root / "mmvdm"),
    "config_not_json": lambda root: _write_config(root, "{ this is not json"),
    "config_is_a_list": lambda root: _write_config(root, "[1, 2, 3]"),
    "config_unknown_key": lambda root: _write_config(root, {**_config(root), "frobnicate": 7}),
    "config_wrong_types": lambda root: _write_config(root, {**_config(root), "num_layers": "2",
                                                            "attention_head_dim": "8"}),
    "config_of_the_vae": lambda root: shutil.copy(root / "vae" / "config.json", root / "mmvdm" / "config.json"),
    "weights_empty": lambda root: (root / "mmvdm" / "model.safetensors").write_bytes(b""),
    "weights_truncated": lambda root: truncate(*[root / "mmvdm" / "model.safetensors"] * 2),
    "weights_garbage": lambda root: garbage(root / "mmvdm" / "model.safetensors"),
    "weights_of_another_preset": _other_preset_config,
    "vae_weights_garbage": lambda root: garbage(root / "vae" / "model.safetensors"),
}


@pytest.mark.parametrize("case, command", [
    pytest.param(case, command, id=f"{case}-{command}") for case in MODEL_CASES
    for command in ("generate", "avatar", "quality", "pack", "train")
    if not (command == "train" and case.startswith("vae_"))])   # train --init reads the MMVDM folder only
def test_broken_model_folder(case, command, capsys, tmp_path, models, reference, dataset):
    root = tmp_path / "models"
    shutil.copytree(models, root)
    MODEL_CASES[case](root)
    out = tmp_path / "out"
    argv = {
        "generate": ["generate", "--reference", reference, "--model", root, *STEPS],
        "avatar": ["avatar", "--reference", reference, "--model", root, *STEPS, "--fit-iterations", "1"],
        "quality": QUALITY + ["--model", root],
        "pack": ["model", "pack", "--mmvdm", root / "mmvdm", "--vae", root / "vae"],
        "train": TRAIN + ["--data", dataset[0], "--init", root / "mmvdm"],
    }[command]
    assert_refused(argv + ["--out", out], capsys, [out])


# ---------------------------------------------------------------------------------------------------
# 5. dataset sequences (reference --sequence, fit SEQUENCE, train --data)
# ---------------------------------------------------------------------------------------------------

def _png_case(make):
    def case(seq: Path, pngs: list[Path]) -> None:
        for p in pngs:
            make(p)
    return case


def _edit_json(name: str, change):
    def case(seq: Path, pngs) -> None:
        path = seq / name
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))   # NaN is written as the JSON extension Python reads back
    return case


def _edit_npz(name: str, **changes):
    def case(seq: Path, pngs) -> None:
        _reference_edit(**changes)(seq / name, seq / name)
    return case


def _drop_npz_key(name: str, key: str):
    def case(seq: Path, pngs) -> None:
        arrays = npz_arrays(seq / name)
        del arrays[key]
        save_npz(seq / name, arrays)
    return case


DATASET_CASES = {
    "png_empty": _png_case(lambda p: p.write_bytes(b"")),
    "png_text": _png_case(lambda p: p.write_text("not a PNG\n")),
    "png_truncated": _png_case(lambda p: truncate(p, p)),
    "png_bomb_40000x40000": _png_case(lambda p: p.write_bytes(png_header_only(40000, 40000))),
    "png_is_directory": _png_case(replace_by_dir),
    "png_missing": _png_case(lambda p: p.unlink()),
    "meta_not_json": lambda seq, pngs: (seq / "meta.json").write_text("{ not json"),
    "meta_missing_views": _edit_json("meta.json", lambda m: m.pop("views")),
    "meta_nan_fps": _edit_json("meta.json", lambda m: m.update(fps=float("nan"))),
    "meta_nan_width": _edit_json("meta.json", lambda m: m.update(width=float("nan"))),
    "meta_frames_text": _edit_json("meta.json", lambda m: m.update(num_frames="x")),
    "meta_views_a_number": _edit_json("meta.json", lambda m: m.update(views=5)),
    "meta_is_a_list": lambda seq, pngs: (seq / "meta.json").write_text("[1, 2]"),
    "meta_binary": lambda seq, pngs: (seq / "meta.json").write_bytes(b"\xff\xfe\x00garbage"),
    "cameras_nan_R": _edit_npz("cameras.npz", R=_set((0, 0, 0), np.nan)),
    "cameras_nan_K": _edit_npz("cameras.npz", K=_set((0, 0, 0), np.nan)),
    "cameras_inf_t": _edit_npz("cameras.npz", t=_set((0, 2), np.inf)),
    "cameras_missing_K": _drop_npz_key("cameras.npz", "K"),
    "cameras_text": lambda seq, pngs: (seq / "cameras.npz").write_text("not an npz\n"),
    "params_nan_expression": _edit_npz("params.npz", expression=_set((0, 0), np.nan)),
}


@pytest.mark.parametrize("command", ["reference", "fit", "train"])
@pytest.mark.parametrize("case", DATASET_CASES)
def test_broken_dataset_sequence(case, command, capsys, tmp_path, dataset):
    ds = tmp_path / "ds"
    shutil.copytree(dataset[0], ds)
    seq = ds / dataset[1]
    views = json.loads((seq / "meta.json").read_text())["views"]
    images = sorted((seq / "images").rglob("*.png"))
    # the images each command reads for sure: reference the first view's first frame, fit every image (the last
    # one broken), a training step some window of some views (all broken)
    pngs = {"reference": [seq / "images" / views[0] / "000000.png"], "fit": images[-1:], "train": images}[command]
    DATASET_CASES[case](seq, pngs)
    argv, out = {
        "reference": (["reference", "--sequence", seq, "--out"], tmp_path / "ref.npz"),
        "fit": (["fit", seq, "--iterations", "1", "--out"], tmp_path / "avatar"),
        "train": (TRAIN + ["--data", ds, "--out"], tmp_path / "run"),
    }[command]
    assert_refused(argv + [out], capsys, [out])


# ---------------------------------------------------------------------------------------------------
# 6. avatar folders (render AVATAR, export AVATAR)
# ---------------------------------------------------------------------------------------------------

def _resave_avatar(tensors=lambda t: t, meta=lambda m: m):
    def case(folder: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file
        path = folder / "avatar.safetensors"
        with safe_open(str(path), "pt") as fh:
            old_meta = dict(fh.metadata() or {})
            names = fh.keys()
            old = {k: fh.get_tensor(k) for k in names}
        save_file(tensors(old), str(path), metadata=meta(old_meta))
    return case


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def _nan_means(t: dict) -> dict:
    t["local_means"] = t["local_means"].clone()
    t["local_means"][0, 0] = float("nan")
    return t


def _binding_out_of_range(t: dict) -> dict:
    t["binding"] = t["binding"].clone()
    t["binding"][0] = 10**9
    return t


AVATAR_FILE = "avatar.safetensors"
AVATAR_CASES = {
    "missing_folder": lambda folder: shutil.rmtree(folder),
    "empty_folder": _emptied,
    "file_empty": lambda folder: (folder / AVATAR_FILE).write_bytes(b""),
    "file_truncated": lambda folder: truncate(folder / AVATAR_FILE, folder / AVATAR_FILE),
    "file_garbage": lambda folder: garbage(folder / AVATAR_FILE),
    "file_is_directory": lambda folder: replace_by_dir(folder / AVATAR_FILE),
    "format_version_99": _resave_avatar(meta=lambda m: {**m, "format_version": "99"}),
    "format_version_missing": _resave_avatar(meta=lambda m: _without(m, "format_version")),
    "head_model_unknown": _resave_avatar(meta=lambda m: {**m, "head_model": "martian"}),
    "deform_config_not_json": _resave_avatar(meta=lambda m: {**m, "deform_config": "{ not json"}),
    "num_frames_not_a_number": _resave_avatar(meta=lambda m: {**m, "num_frames": "many"}),
    "tensor_missing": _resave_avatar(tensors=lambda t: _without(t, "sh")),
    "nan_means": _resave_avatar(tensors=_nan_means),
    "binding_out_of_range": _resave_avatar(tensors=_binding_out_of_range),
}


@pytest.mark.parametrize("command", ["render", "export"])
@pytest.mark.parametrize("case", AVATAR_CASES)
def test_broken_avatar_folder(case, command, capsys, tmp_path, fitted_avatar):
    folder = tmp_path / "avatar"
    shutil.copytree(fitted_avatar, folder)   # never modify the session fixture
    AVATAR_CASES[case](folder)
    argv, out = {
        "render": (["render", folder, "--frames", "2", "--res", "16"], tmp_path / "x.mp4"),
        "export": (["export", folder, "--frames", "2"], tmp_path / "x.ply"),
    }[command]
    assert_refused(argv + ["--out", out], capsys, [out])


# ---------------------------------------------------------------------------------------------------
# 7. generated-videos folders (fit GENERATED)
# ---------------------------------------------------------------------------------------------------

def _edit_manifest(change):
    def case(root: Path) -> None:
        m = json.loads((root / "manifest.json").read_text())
        change(m)
        (root / "manifest.json").write_text(json.dumps(m))
    return case


def _set_in_view(view: int, key: str, index: tuple, value):
    def change(m: dict) -> None:
        a = m["views"][view][key]
        for i in index[:-1]:
            a = a[i]
        a[index[-1]] = value
    return change


GENERATED_CASES = {
    "manifest_not_json": lambda root: (root / "manifest.json").write_text("{ not json"),
    "manifest_is_a_list": lambda root: (root / "manifest.json").write_text("[]"),
    "manifest_version_99": _edit_manifest(lambda m: m.update(version=99)),
    "manifest_without_views": _edit_manifest(lambda m: m.pop("views")),
    "manifest_no_views": _edit_manifest(lambda m: m.update(views=[])),
    "manifest_frames_not_a_number": _edit_manifest(lambda m: m.update(frames="three")),
    "manifest_params_missing_jaw": _edit_manifest(lambda m: m["params"].pop("jaw")),
    "frames_missing": lambda root: (root / "views" / "01" / "0002.png").unlink(),
    "frame_png_garbage": lambda root: garbage(root / "views" / "01" / "0002.png"),
    "camera_nan_R": _edit_manifest(_set_in_view(0, "R", (0, 0), float("nan"))),
    "camera_inf_K": _edit_manifest(_set_in_view(1, "K", (0, 0), float("inf"))),
    "view_index_text": _edit_manifest(lambda m: m["views"][0].update(index="00")),
    "frame_of_another_size": lambda root: (root / "views" / "01" / "0002.png").write_bytes(png_header_only(48, 48)),
}


@pytest.mark.parametrize("case", GENERATED_CASES)
def test_broken_generated_videos(case, capsys, tmp_path, generated):
    root = tmp_path / "generated"
    shutil.copytree(generated, root)
    GENERATED_CASES[case](root)
    out = tmp_path / "avatar"
    assert_refused(["fit", root, "--iterations", "1", "--out", out], capsys, [out])


# ---------------------------------------------------------------------------------------------------
# an output that existed before is left as it was
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["flame_convert", "animation_export", "reference", "render"])
def test_existing_output_is_unchanged(command, capsys, tmp_path, dataset, fitted_avatar):
    text = tmp_path / "generic_model.pkl"
    text.write_text("this is not a FLAME model\n")
    seq = tmp_path / "ds" / dataset[1]
    if command == "reference":
        shutil.copytree(dataset[0], tmp_path / "ds")
        (seq / "meta.json").write_text("{ not json")
    avatar = tmp_path / "avatar"
    avatar.mkdir()
    garbage(avatar / AVATAR_FILE)
    out = tmp_path / {"render": "x.mp4"}.get(command, "out.npz")
    out.write_bytes(b"an earlier output")
    argv = {
        "flame_convert": ["flame", "convert", text, out],
        "animation_export": ["animation", "export", "talk", out, "--head", "flame", "--flame-path", text],
        "reference": ["reference", "--sequence", seq, "--out", out],
        "render": ["render", avatar, "--frames", "2", "--res", "16", "--out", out],
    }[command]
    assert_refused(argv, capsys, [out])
    assert out.read_bytes() == b"an earlier output"


# ---------------------------------------------------------------------------------------------------
# values refused before any run folder exists, and near misses that must still be accepted
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["avatar", "--key-steps", "0"], ["avatar", "--fit-iterations", "0"], ["generate", "--other-steps", "0"]],
    ids=["avatar_key_steps_0", "avatar_fit_iterations_0", "generate_other_steps_0"])
def test_bad_numbers_are_refused_before_the_run_folder(argv, capsys, tmp_path, models, reference):
    out = tmp_path / "out"
    assert_refused([*argv, "--reference", reference, "--model", models, "--out", out], capsys, [out])


@pytest.mark.parametrize("res", ["-5", "0", "72", "100000"])
def test_reference_resolution_is_bounded(res, capsys, tmp_path, dataset):
    ds, seq = dataset
    assert_refused(["reference", "--sequence", ds / seq, "--res", res, "--out", tmp_path / "r.npz"], capsys,
                   [tmp_path / "r.npz"])


@pytest.mark.parametrize("res", ["-3", "0", "100000"])
def test_fit_resolution_is_bounded(res, capsys, tmp_path, dataset):
    ds, seq = dataset
    assert_refused(["fit", ds / seq, "--res", res, "--iterations", "1", "--out", tmp_path / "a"], capsys,
                   [tmp_path / "a"])


def test_near_misses_are_accepted(tmp_path, head, reference, animation):
    """What users' files look like: a resampled float image overshooting [0, 1] a little, an animation with a
    tracker's extra metadata, a model config with an optional field left None."""
    from morph4d.generation.reference import load_reference
    from morph4d.heads.animation import load_animation
    from morph4d.models.mmvdm import MMVDM, MMVDMConfig
    arrays = npz_arrays(reference)
    arrays["image"] = arrays["image"].astype(np.float32) * 1.05 - 0.02          # bicubic-like overshoot
    arrays["image"][0, 0] = -0.05
    save_npz(tmp_path / "overshoot.npz", arrays)
    img = load_reference(tmp_path / "overshoot.npz", head).image
    assert float(img.min()) == 0.0 and float(img.max()) == 1.0
    arrays["image"] = (npz_arrays(reference)["image"] * 65535).astype(np.uint16)
    save_npz(tmp_path / "uint16.npz", arrays)
    with pytest.raises(ValueError, match="uint8 or floats"):
        load_reference(tmp_path / "uint16.npz", head)
    anim = npz_arrays(animation)
    save_npz(tmp_path / "tracked.npz", {**anim, "subject": np.array("actor 3"), "valid": np.ones(25, bool)})
    assert load_animation(tmp_path / "tracked.npz", head).num_frames == anim["jaw"].shape[0]
    MMVDM(MMVDMConfig.preset("tiny", base_tokens=None), generator=torch.Generator().manual_seed(0)).save_pretrained(
        tmp_path / "m")
    assert MMVDM.from_pretrained(tmp_path / "m").config.base_tokens is None
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "patch_size": 2.0}))
    with pytest.raises(ValueError, match="patch_size"):
        MMVDM.from_pretrained(tmp_path / "m")
