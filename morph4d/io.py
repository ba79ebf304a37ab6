"""Atomic file output: every file morph4d writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from morph4d.errors import Morph4DError
from morph4d.validate import read_json


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


def input_key(value):
    """A run-identity entry for an input that may be a file: ``sha256:<hex>`` of its bytes when ``value`` names an
    existing file (a moved or copied run folder, or input, is the same run; an edited file is another), else
    ``value`` itself (a built-in animation's name, None)."""
    if not isinstance(value, str) or not Path(value).is_file():
        return value
    h = hashlib.sha256()
    with open(value, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


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
    """Read a ``save_weights`` folder of ``model_name``: (config fields, state dict); a ``Morph4DError`` naming
    the file for a missing, non-JSON, foreign or corrupt one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / WEIGHTS_CONFIG).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise Morph4DError(f"expected {path / WEIGHTS_CONFIG} and {path / WEIGHTS_FILE} ({model_name}.save_pretrained)")
    raw = read_json(path / WEIGHTS_CONFIG)
    other = raw.get("model")
    if isinstance(other, str) and other != model_name:
        raise Morph4DError(f"{path} holds a {other} network, not the {model_name} this command needs "
                           f"(a model folder of the other system?)")
    if raw.pop("model", None) != model_name or set(raw) - config_fields:
        raise Morph4DError(f"{path / WEIGHTS_CONFIG} is not a {model_name} config (unknown keys: "
                           f"{sorted(set(raw) - config_fields)})")
    try:
        state = load_file(path / WEIGHTS_FILE)
    except (SafetensorError, OSError, ValueError) as e:
        raise Morph4DError(f"{path / WEIGHTS_FILE} is not a readable safetensors file ({e})") from None
    return raw, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_state_strict(module, state: dict, where: str) -> None:
    """``module.load_state_dict(state, strict=True, assign=True)``; a mismatch is one ``Morph4DError`` line that
    counts the missing, unexpected and wrongly shaped tensors and names the first of each."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {name} (e.g. {v[0]})" for name, v in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if v]
        raise Morph4DError(f"{where} do not match the config: tensors " + "; ".join(parts))
    module.load_state_dict(state, strict=True, assign=True)


def config_from_json(cls, raw: dict, where: str):
    """``cls(**raw)`` for a frozen config dataclass read from JSON, after checking every value's type against
    the field's default (bool, int, float, str, tuple), so that a hand-edited config is refused by name
    instead of failing deep inside a network's constructor."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        v, default = raw[f.name], f.default
        if v is None and "None" in str(f.type):   # an optional field (``int | None``)
            values[f.name] = v
            continue
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        elif isinstance(default, str):
            ok = isinstance(v, str)
        elif isinstance(default, tuple):
            kinds = (int,) if all(isinstance(x, int) for x in default) else (int, float)
            ok = isinstance(v, list) and all(isinstance(x, kinds) and not isinstance(x, bool) for x in v)
            v = tuple(v) if ok else v
        else:
            ok = v is None or isinstance(v, (int, float, str))
        if not ok:
            raise Morph4DError(f"{where}: '{f.name}' is {v!r}; expected a value like {default!r}")
        values[f.name] = v
    try:
        return cls(**values)
    except Morph4DError:
        raise
    except (TypeError, ValueError, ArithmeticError) as e:
        raise Morph4DError(f"{where}: not a valid {cls.__name__} ({e})") from None
