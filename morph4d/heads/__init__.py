"""Head models behind one interface (stage 1, MVP4D §3.2: the 3D morphable head the maps are rendered from).

Owns: ``HeadParams`` and the FLAME joint tree (``base``), ``HeadModel`` (blendshapes, pose correctives,
skinning; .npz files) (``model``), the FLAME loader (``flame``), the built-in head and its generator
(``builtin``, ``builtin_gen``), animations and their .npz format (``animation``), and the head-model
commands plus the ``--head`` / ``--animation`` arguments every command shares (``cli``).

May import: foundation only.
"""

from __future__ import annotations

from morph4d.errors import Morph4DError
from morph4d.heads.base import HeadParams
from morph4d.heads.model import HeadModel

HEAD_MODELS = ("builtin", "flame")


def load_head_model(kind: str = "builtin", flame_path=None, num_shape: int = 100, num_expression: int = 50,
                    flame_uv_path=None) -> HeadModel:
    """``kind="builtin"`` (shipped, no files needed) or ``kind="flame"`` with the user's FLAME file."""
    if kind == "builtin":
        from morph4d.heads.builtin import load_builtin_head
        return load_builtin_head()
    if kind == "flame":
        if flame_path is None:
            raise Morph4DError("the FLAME head model needs --flame-path: FLAME 2020 generic_model.pkl, FLAME 2023 "
                               "flame2023.pkl, or an .npz from `morph4d flame convert`")
        from morph4d.heads.flame import load_flame
        return load_flame(flame_path, num_shape=num_shape, num_expression=num_expression, uv_path=flame_uv_path)
    raise Morph4DError(f"unknown head model '{kind}'; expected one of {', '.join(HEAD_MODELS)}")


__all__ = ["HeadModel", "HeadParams", "HEAD_MODELS", "load_head_model"]
