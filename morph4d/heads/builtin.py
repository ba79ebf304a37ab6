"""The built-in, license-free head model shipped with morph4d (see ``builtin_gen`` for how it is made).

14 shape and 24 expression components, FLAME's 5-joint rig (jaw opening is the jaw joint), eyeballs,
mouth cavity, teeth and tongue, UVs. Regenerate the shipped file with
``python -m morph4d.heads.builtin_gen`` (deterministic; a test checks the file against the code).
"""

from __future__ import annotations

from pathlib import Path

import torch

from morph4d.heads.model import HeadModel

BUILTIN_PATH = Path(__file__).resolve().parent.parent / "assets" / "builtin_head.npz"

# Default albedo of the preview look (linear-ish sRGB in [0, 1]).
SKIN = (0.86, 0.66, 0.55)
PALETTE = {
    "lips": (0.72, 0.38, 0.38), "eyebrow": (0.25, 0.17, 0.12), "sclera": (0.93, 0.92, 0.90),
    "iris": (0.30, 0.42, 0.55), "pupil": (0.03, 0.03, 0.03), "mouth_cavity": (0.35, 0.10, 0.10),
    "teeth": (0.92, 0.90, 0.84), "tongue": (0.75, 0.36, 0.38),
}


def load_builtin_head(path: str | Path | None = None) -> HeadModel:
    """Load the shipped built-in head (or another file written by ``builtin_gen``)."""
    model = HeadModel.load_npz(path or BUILTIN_PATH)
    model.name = "builtin"
    return model


def vertex_colors(model: HeadModel, skin=SKIN, palette: dict | None = None) -> torch.Tensor:
    """Per-vertex albedo ``(N, 3)`` in [0, 1] from the model's appearance groups (preview look)."""
    pal = dict(PALETTE, **(palette or {}))
    colors = torch.tensor(skin, dtype=torch.float32).repeat(model.num_vertices, 1)
    g = model.vertex_groups
    order = [("lips", "lips"), ("eyebrow_left", "eyebrow"), ("eyebrow_right", "eyebrow"),
             ("eye_left", "sclera"), ("eye_right", "sclera"), ("iris_left", "iris"), ("iris_right", "iris"),
             ("pupil_left", "pupil"), ("pupil_right", "pupil"), ("mouth_cavity", "mouth_cavity"),
             ("teeth_upper", "teeth"), ("teeth_lower", "teeth"), ("tongue", "tongue")]
    for group, key in order:  # later entries paint over earlier ones (pupil over iris over sclera)
        if group in g:
            colors[g[group]] = torch.tensor(pal[key], dtype=torch.float32)
    return colors
