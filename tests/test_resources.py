"""Memory stays bounded for hostile inputs: files that declare huge images are refused from their headers,
before any large allocation, in a process whose address space is capped (``resource.setrlimit``)."""

import io
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from morph4d.validate import MAX_PIXELS_ENV, check_image_size, max_pixels

LIMIT_BYTES = 3 * 1024 ** 3   # the CLI with torch imported peaks near 1 GiB of address space; the files below
#                               would need 4.8 GB (reference) and 4.8 GB (PNG) if decoded

RUN_CAPPED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from morph4d.cli import main
sys.exit(main({argv!r}))
"""


def huge_npy(shape, dtype=np.uint8) -> bytes:
    """An .npy member that declares ``shape`` but carries only its header (a few hundred bytes)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                               "shape": tuple(shape)})
    return buf.getvalue() + b"\0" * 64


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring ``width`` x ``height`` RGB, with one tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def run_capped(argv, cwd):
    return subprocess.run([sys.executable, "-c", RUN_CAPPED.format(limit=LIMIT_BYTES, argv=argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_pixel_limit_is_configurable(monkeypatch):
    assert max_pixels() == 8192 * 8192
    check_image_size(8192, 8192, "x")
    with pytest.raises(ValueError, match=MAX_PIXELS_ENV):
        check_image_size(8193, 8192, "x")
    monkeypatch.setenv(MAX_PIXELS_ENV, str(9000 * 9000))
    check_image_size(8193, 8192, "x")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="positive whole number"):
        max_pixels()


def test_a_reference_declaring_a_huge_image_is_refused_in_bounded_memory(tmp_path):
    ref = tmp_path / "huge_ref.npz"
    with zipfile.ZipFile(ref, "w") as zf:
        zf.writestr("image.npy", huge_npy((40000, 40000, 3)))
        for key, shape in (("R", (3, 3)), ("t", (3,)), ("K", (3, 3)), ("shape", (14,)), ("expression", (24,)),
                           ("jaw", (3,)), ("neck", (3,)), ("eyes", (6,)), ("rotation", (3,)), ("translation", (3,))):
            buf = io.BytesIO()
            np.save(buf, np.zeros(shape, np.float32))
            zf.writestr(f"{key}.npy", buf.getvalue())
        buf = io.BytesIO()
        np.save(buf, np.array("builtin"))
        zf.writestr("head_model.npy", buf.getvalue())
    assert ref.stat().st_size < 10_000
    r = run_capped(["generate", "--reference", str(ref), "--out", str(tmp_path / "out")], tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and "limit" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_png_bomb_in_a_dataset_is_refused_in_bounded_memory(tmp_path):
    from morph4d.data.synth import SynthConfig, synthesize
    names = synthesize(SynthConfig(out=str(tmp_path / "ds"), identities=1, views=2, frames=1, resolution=32,
                                   modality="multiview_images", progress=False), log=lambda *_: None)
    seq = tmp_path / "ds" / names[0]
    frame = sorted((seq / "images").rglob("*.png"))[0]
    frame.write_bytes(huge_png(40000, 40000))
    for argv in (["reference", "--sequence", str(seq), "--view", "0", "--frame", "0", "--res", "32", "--out",
                  str(tmp_path / "ref.npz")],
                 ["fit", str(seq), "--out", str(tmp_path / "avatar"), "--iterations", "1"]):
        r = run_capped(argv, tmp_path)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: ") and "40000" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ref.npz").exists() and not (tmp_path / "avatar").exists()


@pytest.mark.parametrize("size", [2048, 40])
def test_generation_resolution_is_bounded_before_any_work(size, tmp_path, capsys):
    """A reference within the pixel limit but larger than any model's resolution (or not a multiple of 16) is
    refused by name before the model loads or the run folder exists."""
    import torch

    from morph4d.cameras import orbit_cameras
    from morph4d.cli import main
    from morph4d.generation.reference import Reference
    from morph4d.heads import load_head_model
    head = load_head_model("builtin")
    cam = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 0.75, 26.0, size, size)
    Reference(torch.ones(3, size, size), head.zero_params(), cam, "builtin").save(tmp_path / "ref.npz")
    assert main(["generate", "--reference", str(tmp_path / "ref.npz"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{size}x{size}" in err and "multiple of 16 up to 1024" in err
    assert not (tmp_path / "out").exists()
