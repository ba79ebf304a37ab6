"""Atomic file output: every file morph4d writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from morph4d.errors import Morph4DError


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success rename it over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


WEIGHTS_CONFIG = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_weights(path: str | Path, model_name: str, config: dict, state: dict, dtype=None) -> None:
    """Write a weights folder: ``config.json`` ({"model": name, **config}) + ``model.safetensors``, atomically.

    ``dtype`` (e.g. ``torch.bfloat16``) stores floating-point tensors at that precision (half the bytes of
    float32; ``load_weights`` always returns float32)."""
    from safetensors.torch import save_file
    path = Path(path)
    write_json(path / WEIGHTS_CONFIG, {"model": model_name, **config})
    with atomic_path(path / WEIGHTS_FILE) as tmp:
        save_file({k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                   for k, v in state.items()}, str(tmp))


def load_weights(path: str | Path, model_name: str, config_fields: set[str]) -> tuple[dict, dict]:
    """Read a ``save_weights`` folder of ``model_name``: (config fields, state dict); ValueError otherwise."""
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / WEIGHTS_CONFIG).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise Morph4DError(f"expected {path / WEIGHTS_CONFIG} and {path / WEIGHTS_FILE} ({model_name}.save_pretrained)")
    raw = json.loads((path / WEIGHTS_CONFIG).read_text())
    if raw.pop("model", None) != model_name or set(raw) - config_fields:
        raise Morph4DError(f"{path / WEIGHTS_CONFIG} is not a {model_name} config")
    return raw, {k: v.float() if v.is_floating_point() else v for k, v in load_file(path / WEIGHTS_FILE).items()}
