"""The one interface every head model implements (built-in and FLAME).

A head model maps parameters (shape, expression, jaw, neck, eyes, global rotation and translation)
to posed vertices ``(..., N, 3)`` in metres, in the head model's own right-handed frame: +y up, +z out
of the face, +x towards the subject's left (FLAME's frame). It also exposes faces, UVs, the template
(canonical) vertices used by MVP4D's 3D pose maps, and the neutral-expression mesh used by its
expression deformation maps (MVP4D §3.2).

The kinematic tree is FLAME's for every model: 5 joints ``global(0) -> neck(1) -> {jaw(2), eye_left(3),
eye_right(4)}``, all rotations axis-angle, so one parameter set drives either model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from morph4d.errors import Morph4DError

JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")
PARENTS = (-1, 0, 1, 1, 1)


@dataclass
class HeadParams:
    """Per-frame head parameters; every field has arbitrary leading batch dims ``(...,)``.

    shape:       (..., S) identity coefficients
    expression:  (..., E) expression coefficients
    jaw:         (..., 3) axis-angle of the jaw joint
    neck:        (..., 3) axis-angle of the neck joint
    eyes:        (..., 6) axis-angles of the left then right eye joints
    rotation:    (..., 3) global axis-angle (FLAME's ``global_orient``)
    translation: (..., 3) global translation in metres (FLAME's ``transl``)
    """

    shape: torch.Tensor
    expression: torch.Tensor
    jaw: torch.Tensor
    neck: torch.Tensor
    eyes: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor

    @classmethod
    def zeros(cls, num_shape: int, num_expression: int, batch: tuple[int, ...] = (),
              dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> "HeadParams":
        z = lambda n: torch.zeros(*batch, n, dtype=dtype, device=device)  # noqa: E731
        return cls(z(num_shape), z(num_expression), z(3), z(3), z(6), z(3), z(3))

    @property
    def batch_shape(self) -> torch.Size:
        return self.jaw.shape[:-1]

    def to(self, *args, **kwargs) -> "HeadParams":
        return HeadParams(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def replace(self, **changes) -> "HeadParams":
        return replace(self, **changes)

    def expand_shape(self) -> "HeadParams":
        """Broadcast ``shape`` over the batch dims of the other fields (one identity, many frames)."""
        batch = self.jaw.shape[:-1]
        return self.replace(shape=self.shape.expand(*batch, self.shape.shape[-1]))

    def pose(self) -> torch.Tensor:
        """Joint rotations in FLAME order, ``(..., 5, 3)`` axis-angle."""
        full = torch.cat([self.rotation, self.neck, self.jaw, self.eyes], dim=-1)
        return full.reshape(*full.shape[:-1], 5, 3)

    def check(self, num_shape: int, num_expression: int) -> None:
        """Raise ``ValueError`` naming the field and the expected shape if any field is malformed."""
        expected = {"shape": num_shape, "expression": num_expression, "jaw": 3, "neck": 3, "eyes": 6,
                    "rotation": 3, "translation": 3}
        batch = self.jaw.shape[:-1]
        for name, size in expected.items():
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise Morph4DError(f"HeadParams.{name} must be a torch.Tensor, got {type(value).__name__}")
            if value.shape[-1:] != (size,):
                raise Morph4DError(f"HeadParams.{name} must have shape (..., {size}), got {tuple(value.shape)}")
            if name != "shape" and value.shape[:-1] != batch:
                raise Morph4DError(f"HeadParams.{name} has batch dims {tuple(value.shape[:-1])}, expected "
                                   f"{tuple(batch)} like HeadParams.jaw")
        if self.shape.shape[:-1] not in (batch, torch.Size(())):
            raise Morph4DError(f"HeadParams.shape has batch dims {tuple(self.shape.shape[:-1])}, expected "
                               f"{tuple(batch)} or () for one identity shared by all frames")
