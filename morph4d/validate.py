"""Checks at the boundaries where a user's file enters morph4d, shared by every format's reader.

Each format has one reader (ARCHITECTURE.md "File formats and their owners"); the readers use these checks
so that a broken or hostile file is refused with a ``Morph4DError`` naming the file, what was wrong and what
was expected -- before anything is written and before a large allocation:

* images are opened header-first: a picture of more than ``max_pixels()`` pixels (decompression bombs
  included) is refused before decoding; a directory, an empty, truncated or non-image file is named;
* ``.npz`` files are opened member-header-first: object arrays (pickles) are refused without unpickling,
  and the arrays' declared sizes are checked against the same limit before any array is read;
* values: finite, in range, rotation matrices orthonormal, intrinsics positive.

The limit is ``MORPH4D_MAX_PIXELS`` (default 8192 x 8192 = 67,108,864 pixels); set the environment
variable to raise it.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from morph4d.errors import InputNotFoundError, Morph4DError

MAX_PIXELS_ENV = "MORPH4D_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 8192 * 8192


def max_pixels() -> int:
    """The pixel limit of one image (``MORPH4D_MAX_PIXELS``, default 8192 x 8192)."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise Morph4DError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive whole number of pixels")
    return value


def input_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path when it is an existing regular file (symlinks followed), else a clear error."""
    path = Path(path)
    if path.is_dir():
        raise Morph4DError(f"{what} is a directory; expected a file" if str(path) in what
                           else f"{what} {path} is a directory; expected a file")
    if not path.is_file():
        broken = " (a symbolic link to nowhere)" if path.is_symlink() else ""
        raise InputNotFoundError(f"{what} not found: {path}{broken}")
    if path.stat().st_size == 0:
        raise Morph4DError(f"{what} {path} is empty")
    return path


def check_image_size(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise Morph4DError(f"{what}: an image of {width} x {height} pixels has no pixels")
    if width * height > max_pixels():
        raise Morph4DError(f"{what}: {width} x {height} = {width * height:,} pixels is more than the limit of "
                           f"{max_pixels():,} (set {MAX_PIXELS_ENV} to raise it)")


IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)  # what PIL raises for broken files


def open_image(path: str | Path, where: str) -> Image.Image:
    """Open an image file header-first (PIL decodes lazily) and check its size against ``max_pixels()``
    before anything is decoded. PIL's own decompression-bomb limit is set aside while opening: ours applies,
    and it says how to raise it. The caller closes the image (``with open_image(...) as im``)."""
    path = input_file(path, where)
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        im = Image.open(path)
    except IMAGE_ERRORS as e:
        raise Morph4DError(f"{where} is not a readable image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    try:
        check_image_size(*im.size, where)
    except Morph4DError:
        im.close()
        raise
    return im


def read_image(path: str | Path, what: str = "image") -> torch.Tensor:
    """A PNG/JPEG as float RGB ``(H, W, 3)`` in [0, 1]; its size is checked before it is decoded."""
    where = f"{what} {path}"
    with open_image(path, where) as im:
        try:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).float() / 255.0
        except IMAGE_ERRORS as e:
            raise Morph4DError(f"{where} is not a readable image ({e})") from None


def read_npz(path: str | Path, what: str, max_values: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, after checking each member's header: no object arrays (pickles are
    refused without being loaded), at most ``max_values`` values in all (default: 4 x the pixel limit)."""
    path = input_file(path, what)
    limit = 4 * max_pixels() if max_values is None else max_values
    try:
        with zipfile.ZipFile(path) as zf:
            headers = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(fh))
                headers[info.filename[:-4]] = (shape, dtype)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise Morph4DError(f"{what} {path} is not a readable .npz file ({e})") from None
    if not headers:
        raise Morph4DError(f"{what} {path} is not an .npz file with arrays")
    for name, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise Morph4DError(f"{what} {path}: array '{name}' holds Python objects (a pickle); morph4d reads "
                               f"numeric and string arrays only")
    total = sum(int(np.prod(shape, dtype=np.int64)) for shape, _ in headers.values())
    if total > limit:
        raise Morph4DError(f"{what} {path}: its arrays declare {total:,} values, more than the limit of {limit:,} "
                           f"(4 x {MAX_PIXELS_ENV}; set it to raise the limit)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise Morph4DError(f"{what} {path} is not a readable .npz file ({e})") from None


def read_json(path: str | Path, what: str | None = None) -> dict:
    """A JSON object from ``path``; anything else is refused with what was expected. ``what`` names the file
    in messages (default: its path)."""
    label = what or str(path)
    path = input_file(path, label)
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Morph4DError(f"{label} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise Morph4DError(f"{label}: expected a JSON object, got {type(value).__name__}")
    return value


def check_finite(x, name: str, where: str) -> None:
    t = torch.as_tensor(x)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise Morph4DError(f"{where}: {name} has NaN or infinite values; expected finite numbers")


def check_range(x, name: str, where: str, lo: float, hi: float) -> None:
    t = torch.as_tensor(x)
    check_finite(t, name, where)
    if t.numel() and (float(t.min()) < lo or float(t.max()) > hi):
        raise Morph4DError(f"{where}: {name} has values in [{float(t.min()):g}, {float(t.max()):g}]; expected "
                           f"[{lo:g}, {hi:g}]")


def check_rotation(R, name: str, where: str, tol: float = 1e-3) -> None:
    """``R`` ``(..., 3, 3)`` orthonormal with determinant +1 (a rotation, not a reflection or a scale)."""
    R = torch.as_tensor(R, dtype=torch.float64)
    if R.shape[-2:] != (3, 3):
        raise Morph4DError(f"{where}: {name} must be 3 x 3 rotation matrices, got shape {tuple(R.shape)}")
    check_finite(R, name, where)
    eye = torch.eye(3, dtype=torch.float64)
    if float((R @ R.transpose(-1, -2) - eye).abs().max()) > tol or float((torch.linalg.det(R) - 1).abs().max()) > tol:
        raise Morph4DError(f"{where}: {name} is not a rotation matrix (R R^T = I and det R = 1 expected)")


def check_intrinsics(K, name: str, where: str) -> None:
    """Pixel intrinsics ``(..., 3, 3)``: finite, positive focal lengths, last row (0, 0, 1)."""
    K = torch.as_tensor(K, dtype=torch.float64)
    if K.shape[-2:] != (3, 3):
        raise Morph4DError(f"{where}: {name} must be 3 x 3 intrinsics, got shape {tuple(K.shape)}")
    check_finite(K, name, where)
    if bool((K[..., 0, 0] <= 0).any() | (K[..., 1, 1] <= 0).any()):
        raise Morph4DError(f"{where}: {name} has a focal length <= 0; expected fx, fy > 0 in pixels")
    if float((K[..., 2, :] - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).abs().max()) > 1e-6:
        raise Morph4DError(f"{where}: {name}'s last row must be (0, 0, 1)")


__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_ERRORS", "MAX_PIXELS_ENV", "check_finite", "check_image_size", "check_intrinsics",
           "check_range", "check_rotation", "input_file", "max_pixels", "open_image", "read_image", "read_json",
           "read_npz"]
