"""Image and video output: PNG, MP4 (H.264 through PyAV's bundled FFmpeg), contact sheets. Atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from morph4d.errors import Morph4DError
from morph4d.io import atomic_path
from morph4d.validate import read_image


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (..., H, W, 3) -> uint8."""
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | Path, image) -> None:
    """Write one float image (H, W, 3) in [0, 1] as PNG."""
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")


def write_mp4(path: str | Path, frames, fps: float = 25.0, crf: int = 18) -> None:
    """Write float frames (F, H, W, 3) in [0, 1] as an H.264 MP4 (yuv420p, plays everywhere)."""
    import av
    data = to_uint8(frames)
    if data.ndim != 4 or data.shape[-1] != 3:
        raise Morph4DError(f"frames must be (F, H, W, 3), got {data.shape}")
    F, H, W, _ = data.shape
    if H % 2 or W % 2:  # yuv420p needs even sizes
        data = np.pad(data, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height = data.shape[2], data.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in data:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())


def read_mp4(path: str | Path) -> np.ndarray:
    """Decode an MP4 to uint8 frames (F, H, W, 3)."""
    import av
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def grid(images: torch.Tensor, cols: int, pad: int = 4, background: float = 1.0) -> torch.Tensor:
    """Tile images (N, H, W, 3) into a (rows*H, cols*W, 3) sheet with ``pad`` pixels between tiles."""
    N, H, W, C = images.shape
    rows = -(-N // cols)
    sheet = torch.full((rows * (H + pad) + pad, cols * (W + pad) + pad, C), background, dtype=images.dtype)
    for k in range(N):
        r, c = divmod(k, cols)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        sheet[y: y + H, x: x + W] = images[k]
    return sheet


def read_png(path: str | Path) -> torch.Tensor:
    """A PNG as a float image (H, W, 3) in [0, 1]; size-checked before decoding (``validate.read_image``)."""
    return read_image(path, "image")
