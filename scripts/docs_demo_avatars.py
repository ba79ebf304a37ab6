"""README's picture of the demo's two avatars beside their references (issue 17 §5):
``python scripts/docs_demo_avatars.py [DEMO_DIR] [OUT_PNG]`` (defaults: out/demo, docs/demo_avatars.png) after
``make demo``.

One row per portrait (the photo, the held-out synthetic person): the reference the avatar was made from, then
six frames of ``avatar.mp4`` (the fitted sequence seen from the demo's orbiting camera), all at 128 px.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from morph4d.video import grid, read_mp4, read_png, write_png  # noqa: E402

SIZE = 128
FRAMES = 6


def tile(image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) float -> (SIZE, SIZE, 3), area-averaged or bilinear."""
    x = image.permute(2, 0, 1)[None]
    mode = "area" if x.shape[-1] > SIZE else "bilinear"
    return F.interpolate(x, size=(SIZE, SIZE), mode=mode, **({} if mode == "area" else {"align_corners": False}))[
        0].permute(1, 2, 0).clamp(0, 1)


def row(reference: Path, video: Path) -> list[torch.Tensor]:
    frames = read_mp4(video)
    picks = np.linspace(0, len(frames) - 1, FRAMES).round().astype(int)
    return [tile(read_png(reference))] + [tile(torch.from_numpy(frames[i]).float() / 255) for i in picks]


def main() -> None:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/demo_avatars.png")
    tiles = row(demo / "photo" / "track" / "reference.png", demo / "photo" / "avatar.mp4")
    tiles += row(demo / "avatar" / "reference.png", demo / "avatar" / "avatar.mp4")
    write_png(out, grid(torch.stack(tiles), cols=1 + FRAMES, pad=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
