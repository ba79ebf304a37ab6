"""Model folders: the MMVDM and its video autoencoder on disk, and the embedded default.

A model folder holds ``mmvdm/`` and ``vae/``, each ``config.json`` + ``model.safetensors`` (the
constructor's config and the weights), and optionally ``provenance.json`` (how it was trained). At paper
scale ``vae/`` may be absent and the autoencoder comes from the user's local CogVideoX-2B folder. The
embedded default (``DEFAULT_MODEL``) ships inside the package (README "Embedded default";
``scripts/train_default.sh`` reproduces it). ``weights_digest`` identifies a folder's weights in every
run's identity, so outputs of other (e.g. retrained) weights are never reused.

IM-Portrait's U-Net is one weights folder (``config.json`` + ``model.safetensors`` + ``provenance.json``); its
embedded default is ``DEFAULT_PORTRAIT`` (``scripts/train_portrait_default.sh``, ``pack_portrait``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from morph4d.errors import Morph4DError
from morph4d.io import config_from_json, write_json
from morph4d.models.mmvdm import MMVDM, MMVDMConfig
from morph4d.models.vae import VAE_PRESETS, CausalVideoAutoencoder, CogVideoXAutoencoder
from morph4d.validate import read_json

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "default"  # the embedded default
DEFAULT_PORTRAIT = DEFAULT_MODEL.parent / "portrait"                              # IM-Portrait's


def init_models(out: str | Path, mmvdm_preset: str = "small", vae_preset: str = "small", seed: int = 0,
                cogvideox: str | None = None) -> Path:
    """Write an untrained model folder ``out/mmvdm`` + ``out/vae`` (safetensors + config.json), or with
    ``cogvideox`` the MMVDM initialised from a local CogVideoX-2B folder (``MMVDM.from_cogvideox``)."""
    out = Path(out)
    g = torch.Generator().manual_seed(seed)
    if cogvideox is not None:
        MMVDM.from_cogvideox(cogvideox).save_pretrained(out / "mmvdm")
    else:
        MMVDM(MMVDMConfig.preset(mmvdm_preset), generator=g).save_pretrained(out / "mmvdm")
        if vae_preset not in VAE_PRESETS:
            raise Morph4DError(f"unknown VAE preset '{vae_preset}'; expected one of {sorted(VAE_PRESETS)}")
        CausalVideoAutoencoder(VAE_PRESETS[vae_preset], generator=g).save_pretrained(out / "vae")
    return out


def weights_digest(model: str | Path | None) -> str:
    """SHA-256 over the ``*.safetensors`` files of a model folder (None: the embedded default): part of every
    run's identity, so outputs of other (e.g. retrained) weights in the same folder are never reused."""
    root = Path(model) if model else DEFAULT_MODEL
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.safetensors")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def pack_models(mmvdm: str | Path, vae: str | Path, out: str | Path, provenance: dict | None = None) -> Path:
    """Write a model folder ``out/mmvdm`` (bfloat16 storage: half the bytes) + ``out/vae`` (float32: the
    decoder's precision shows directly in the pixels) from trained weights folders, plus ``provenance.json``."""
    out = Path(out)
    model, autoencoder = MMVDM.from_pretrained(mmvdm), CausalVideoAutoencoder.from_pretrained(vae)  # both read first
    model.save_pretrained(out / "mmvdm", dtype=torch.bfloat16)
    autoencoder.save_pretrained(out / "vae")
    if provenance is not None:
        write_json(out / "provenance.json", provenance)
    return out


def pack_portrait(unet: str | Path, out: str | Path, provenance: dict | None = None) -> Path:
    """Write IM-Portrait's U-Net from a training run's ``unet/`` to ``out`` in bfloat16 storage (half the bytes;
    it loads back as float32), plus ``provenance.json``."""
    from morph4d.models.portrait_unet import PortraitUNet
    net = PortraitUNet.from_pretrained(unet)                        # read (and checked) before anything is written
    net.save_pretrained(out, dtype=torch.bfloat16)
    if provenance is not None:
        write_json(Path(out) / "provenance.json", provenance)
    return Path(out)


def read_mmvdm_config(path: str | Path | None = None) -> MMVDMConfig:
    """The MMVDM's architecture from ``path/mmvdm/config.json`` (None: the embedded default), weights unread."""
    folder = check_model_folder(DEFAULT_MODEL if path is None else path) / "mmvdm"
    raw = read_json(folder / "config.json")
    if raw.pop("model", None) != "MMVDM":
        raise Morph4DError(f"{folder / 'config.json'} is not an MMVDM config")
    return config_from_json(MMVDMConfig, raw, str(folder / "config.json"))


def check_model_folder(path: str | Path) -> Path:
    """``path`` as a Path if it holds ``mmvdm/``, else a ``Morph4DError`` saying what a model folder is."""
    path = Path(path)
    if not (path / "mmvdm").is_dir():
        raise Morph4DError(f"{path} is not a model folder: expected {path / 'mmvdm'} (and {path / 'vae'} or "
                           f"--cogvideox); create one with `morph4d model init` or train one")
    return path


def load_models(path: str | Path | None = None, cogvideox: str | None = None):
    """The MMVDM from ``path/mmvdm`` and the autoencoder from ``path/vae`` or, at paper scale, from the
    user's local CogVideoX-2B folder (``cogvideox``). ``path`` None: the embedded default."""
    path = check_model_folder(DEFAULT_MODEL if path is None else path)
    model = MMVDM.from_pretrained(path / "mmvdm").eval()
    if cogvideox is not None:
        vae = CogVideoXAutoencoder.from_pretrained(cogvideox)
    elif (path / "vae").is_dir():
        vae = CausalVideoAutoencoder.from_pretrained(path / "vae").eval()
    else:
        raise Morph4DError(f"{path} has no vae/ folder; pass --cogvideox with a local CogVideoX-2B folder")
    return model, vae


__all__ = ["DEFAULT_MODEL", "DEFAULT_PORTRAIT", "pack_portrait", "check_model_folder", "read_mmvdm_config", "init_models", "load_models", "pack_models", "weights_digest"]
