"""The baselines of ``morph4d eval``'s tables (issue 19 §3), for any ground-truth sequence.

* **Reference projection**: the reference image's pixels projected onto the ground truth's geometry at frame 0
  and carried with it to every view and frame (a texture copied onto the true, moving surface); surface points
  the reference camera does not see get the mean colour of those it sees; the background is white. On held-out
  synthetic identities the geometry is the whole scene (head and hair/glasses meshes, ``synthetic``); on a
  dataset sequence it is the head model of the sequence's parameters (no hair: hair outside the head mesh is
  background, which the masked metrics count as an error).
* **Oracle avatar**: the Gaussian avatar fitted to the ground-truth videos themselves (``FIT_PRESETS["demo"]``
  on the chosen training views): what a capture rig would give, the upper reference of the avatar rows.
  Views left out of its training are novel views for it.
Both are runs like any other: ``eval.run.evaluate`` scores them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from morph4d.conditioning.projection import project_reference


def truth_projection(truth) -> torch.Tensor:
    """The reference projection of a ground-truth sequence (``eval.inputs.Truth``): frame 0 of its view nearest
    the reference direction (``--reference-view`` names it) on the head model of its parameters, at every view:
    (V, F, 3, H, W)."""
    i = truth.reference_index
    with torch.no_grad():
        verts = truth.model(truth.params)                                   # (F, N, 3) world
    return project_reference(verts, truth.model.faces, truth.cameras[[i]], truth.images[i, 0], truth.cameras)


def fit_avatar(data: Path, out: Path, iterations: int, train_views: tuple[int, ...] | None, log,
               train_frames: tuple[int, ...] | None = None) -> Path:
    """The avatar fitted to the videos of sequence ``data`` -> ``out`` (the ground truth's: the oracle avatar; the
    generated views': our avatar); a fit found there (a resumed benchmark) is reused. ``train_views`` /
    ``train_frames``: view / frame indices it sees (None: every one)."""
    from morph4d.avatar.fit import FIT_PRESETS, fit_sequence
    if (out / "avatar.safetensors").is_file():
        log(f"[eval]   {out.name}: fitted before, reused")
    else:
        fit_sequence(data, out, replace(FIT_PRESETS["demo"], iterations=iterations, train_views=train_views,
                                                 train_frames=train_frames),
                     log=lambda *a: None)
        log(f"[eval]   fitted {out.name}")
    return out


__all__ = ["truth_projection", "fit_avatar"]
