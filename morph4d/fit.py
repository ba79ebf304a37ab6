"""Fitting Gaussians bound to the head mesh to multi-view videos (MVP4D §4, S2.4; GaussianAvatars).

The first part of issue 8's `morph4d fit`: reads a dataset sequence (format v1, synthetic ground truth or
imported) or the output of `morph4d generate` (its manifest.json), optimises ``BoundGaussians`` (one per triangle,
GaussianAvatars' initialisation) with MVP4D's photometric + regulariser losses (``gaussians/losses.py``),
one (view, frame) per iteration, Adam with one group per raw tensor; checkpoints atomically and resumes a
killed run at the same iteration with the same random state. Not yet here: the UV deformation U-Net in the
loop, densification/pruning, off-mesh Gaussians, back-face dropout.

Loop: sample (view, frame) -> pose the head -> to_world -> render -> loss -> backward -> step -> log /
checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from morph4d.cameras import Cameras
from morph4d.data.format import read_sequence, select_frames
from morph4d.gaussians import BoundGaussians, render_gaussians
from morph4d.gaussians.losses import LossWeights, total_loss
from morph4d.heads import HeadParams, load_head_model
from morph4d.io import atomic_path, write_json

CHECKPOINT = "fit_checkpoint.pt"


@dataclass(frozen=True)
class FitConfig:
    iterations: int = 2000
    resolution: int | None = None     # render/compare at this size (default: the images' size)
    sh_degree: int = 3
    lr_means: float = 5e-3            # local means are in units of the triangle scale k
    lr_scales: float = 1.7e-2         # GaussianAvatars' rates for log-scales, rotations, opacity, colour
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_sh: float = 2.5e-3
    checkpoint_every: int = 200
    log_every: int = 50
    seed: int = 0

    def check(self) -> None:
        if self.iterations < 1 or self.checkpoint_every < 1 or not 0 <= self.sh_degree <= 3:
            raise ValueError(f"invalid fit configuration: {self}")


@dataclass
class FitData:
    """What a fit reads: images (V, F, 3, S, S) in [0, 1], V cameras at S px, per-frame params, head model."""
    name: str
    images: torch.Tensor
    cameras: Cameras
    params: HeadParams
    head_model: str

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    @property
    def num_frames(self) -> int:
        return self.images.shape[1]


def _resize(imgs: torch.Tensor, size: int) -> torch.Tensor:
    """(V, F, 3, H, W) -> (V, F, 3, size, size) with area averaging."""
    if imgs.shape[-1] == size and imgs.shape[-2] == size:
        return imgs
    V, F = imgs.shape[:2]
    return torch.nn.functional.interpolate(imgs.flatten(0, 1), size=(size, size), mode="area").unflatten(0, (V, F))


def load_fit_data(path: str | Path, resolution: int | None = None) -> FitData:
    """A dataset sequence folder (format v1) or a `morph4d generate` output folder (``manifest.json``)."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        from morph4d.generate import read_manifest
        from morph4d.video import read_png
        m = read_manifest(path / "manifest.json")
        views = m["views"]
        W, H = views[0]["width"], views[0]["height"]
        if W != H:
            raise ValueError(f"{path}: fitting expects square images, got {W}x{H}")
        missing = [f"views/{v['index']:02d}/{f:04d}.png" for v in views for f in range(m["frames"])
                   if not (path / "views" / f"{v['index']:02d}" / f"{f:04d}.png").is_file()]
        if missing:
            raise ValueError(f"{path}: the manifest lists frames that are missing, e.g. {missing[:3]}")
        imgs = torch.stack([torch.stack([read_png(path / "views" / f"{v['index']:02d}" / f"{f:04d}.png")
                                         for f in range(m["frames"])]) for v in views]).permute(0, 1, 4, 2, 3)
        t = lambda key: torch.tensor([v[key] for v in views], dtype=torch.float32)  # noqa: E731
        cams = Cameras(t("R"), t("t"), t("K"), W, H)
        p = {k: torch.tensor(v, dtype=torch.float32) for k, v in m["params"].items()}
        params = HeadParams(**p)
        name, head_model = path.name, m["head_model"]
    else:
        seq = read_sequence(path)
        if int(seq.meta["width"]) != int(seq.meta["height"]):
            raise ValueError(f"sequence '{seq.name}': fitting expects square images, got "
                             f"{seq.meta['width']}x{seq.meta['height']}")
        rgb, _ = seq.read_images(range(seq.num_views), range(seq.num_frames))
        imgs, cams, params = rgb.permute(0, 1, 4, 2, 3), seq.cameras, seq.params
        name, head_model = seq.name, seq.meta["head_model"]
    size = resolution or cams.width
    return FitData(name, _resize(imgs, size), cams.resized(size, size), params, head_model)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).square().mean().clamp(min=1e-12)))


def fit_sequence(sequence: str | Path, out: str | Path, cfg: FitConfig = FitConfig(), flame_path=None,
                 log=print, stop_after: int | None = None) -> dict:
    """Fit (or resume fitting) an avatar to a dataset sequence or generated videos (``load_fit_data``);
    writes ``out/avatar.safetensors``."""
    from safetensors.torch import save_file
    cfg.check()
    seq = load_fit_data(sequence, cfg.resolution)
    out = Path(out)
    head = load_head_model(seq.head_model, flame_path=flame_path)
    cameras, images = seq.cameras, seq.images
    identity = {"sequence": str(Path(sequence).resolve()), "config": asdict(cfg)}
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        if json.loads(state["identity"]) != identity:
            raise ValueError(f"{out} holds a fit of another sequence or configuration; use another folder")
        bound = BoundGaussians.from_state_dict(state["gaussians"])
        step = int(state["step"])
    else:
        bound = BoundGaussians.one_per_triangle(head.faces.shape[0], sh_degree=cfg.sh_degree)
        step, state = 0, None
    params = {k: v.requires_grad_(True) for k, v in bound.state_dict().items() if v.is_floating_point()}
    lrs = {"local_means": cfg.lr_means, "log_scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacity_logits": cfg.lr_opacity, "sh": cfg.lr_sh}
    opt = torch.optim.Adam([{"params": [params[k]], "lr": lrs[k], "name": k} for k in lrs], eps=1e-15)
    g = torch.Generator().manual_seed(cfg.seed)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
    write_json(out / "fit_config.json", {"fit": asdict(cfg), "sequence": identity["sequence"]})
    with torch.no_grad():
        vertices = head(seq.params)  # (F, N, 3)
    weights = LossWeights()
    last = {}

    def save() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"identity": json.dumps(identity), "step": step, "gaussians": bound.state_dict(),
                        "optimizer": opt.state_dict(), "generator": g.get_state()}, tmp)

    end = cfg.iterations if stop_after is None else min(cfg.iterations, stop_after)
    while step < end:
        # 1. data: one view and frame, drawn from the run's generator
        v = int(torch.randint(seq.num_views, (1,), generator=g))
        f = int(torch.randint(seq.num_frames, (1,), generator=g))
        # 2. forward: pose, bind, render
        world = bound.to_world(vertices[f], head.faces)
        r = render_gaussians(world.means, world.quats, world.scales, world.opacities, world.sh, cameras[[v]])
        pred = r.image.permute(0, 3, 1, 2)  # (1, 3, H, W)
        # 3. losses, backward, step
        loss, terms = total_loss(pred, images[v, f][None], local_means=bound.local_means,
                                 log_scales=bound.log_scales, weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        last = {"step": step, "loss": float(loss.detach()), "psnr": psnr(pred.detach(), images[v, f][None])}
        if step % cfg.log_every == 0 or step == end:
            log(f"step {step}/{cfg.iterations}: loss {last['loss']:.4f}, PSNR {last['psnr']:.2f} dB")
        if step % cfg.checkpoint_every == 0 or step == end:
            save()
    if step >= cfg.iterations:
        with atomic_path(out / "avatar.safetensors") as tmp:
            save_file({k: t.detach().contiguous() for k, t in bound.state_dict().items()}, str(tmp),
                      metadata={"head_model": head.name, "sequence": seq.name})
    return last


def evaluate(sequence: str | Path, out: str | Path, views=None, frames=None, resolution: int | None = None,
             flame_path=None) -> float:
    """Mean PSNR of the fitted avatar against the sequence's images (all or the given views/frames)."""
    from safetensors.torch import load_file
    seq = load_fit_data(sequence, resolution)
    head = load_head_model(seq.head_model, flame_path=flame_path)
    bound = BoundGaussians.from_state_dict(load_file(str(Path(out) / "avatar.safetensors")))
    cameras, images = seq.cameras, seq.images
    views = range(seq.num_views) if views is None else views
    frames = range(seq.num_frames) if frames is None else frames
    scores = []
    with torch.no_grad():
        for f in frames:
            world = bound.to_world(head(select_frames(seq.params, f)), head.faces)
            r = render_gaussians(world.means, world.quats, world.scales, world.opacities, world.sh,
                                 cameras[list(views)])
            for k, v in enumerate(views):
                scores.append(psnr(r.image[k].permute(2, 0, 1), images[v, f]))
    return sum(scores) / len(scores) if scores else math.nan


def render_avatar(out: str | Path, params: HeadParams, cameras: Cameras, head_model: str = "builtin",
                  flame_path=None) -> torch.Tensor:
    """Re-animate a fitted avatar: frame f of ``params`` (F frames) seen by camera f -> (F, H, W, 3).

    The Gaussians are bound to the mesh, so any expression/pose sequence drives them, including
    animations the avatar was never fitted on."""
    from safetensors.torch import load_file
    path = Path(out) / "avatar.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no fitted avatar at {path}; run `morph4d fit` first")
    head = load_head_model(head_model, flame_path=flame_path)
    bound = BoundGaussians.from_state_dict(load_file(str(path)))
    frames = []
    with torch.no_grad():
        verts = head(params)
        for f in range(verts.shape[0]):
            w = bound.to_world(verts[f], head.faces)
            frames.append(render_gaussians(w.means, w.quats, w.scales, w.opacities, w.sh, cameras[[f]]).image[0])
    return torch.stack(frames)
