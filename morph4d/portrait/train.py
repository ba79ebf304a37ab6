"""Training IM-Portrait's U-Net (IM-Portrait §3.3, supplement "Training Details"): ``morph4d train-mpi``.

Each step draws one window per batch item from our datasets (``data.loader.MultiViewWindows``: ``views`` views x
F frames of one sequence, cropped around the head, plus a reference portrait from another frame / view), and
trains on one of the two losses of ``objective``:

* **L_mpi**: the MPI camera is the window's first view; the network sees that view's video noised (pixel-space
  diffusion, ``diffusion.schedule``), its UV maps, the first-frame slot and the reference; its MPIs are rendered
  back into the same view and compared with the clean frames.
* **L_side**: the MPI camera is another view of the window within ``max_side_deg`` of the first (our multi-view
  data has the exact side views the paper did not; the windows' second view is drawn among the views that close,
  ``WindowConfig.near_view_deg``); the MPIs built there are rendered into the first view. When the rig has no
  view that close, the step uses L_mpi (the log counts both).

Stages: ``bootstrap_steps`` of the colour branch with L_mpi, then ``geometry_steps`` of the geometry branch with
L_mpi / L_side drawn 0.8 / 0.2 (``objective.trainable``, ``choose_loss``). Condition dropout as the supplement.
The network predicts the MPI; no noise target is needed (the losses are taken after rendering).

**Pseudo ground truth** (IM-Portrait supplement, "Reference-Target Alternating Training" and Fig. E): on monocular
video the MPI camera of L_side has no real frames, so the paper feeds the network a pseudo ground truth there
(the reference view with the target expression, from a 2D animation model, blurry) and only at large noise
levels, where the global structure is all the network can read from its input. We do the same (``pseudo_gt``, on
by default, so training sees what monocular data gives): L_side's noisy input is the reference portrait projected
through the head mesh into the MPI camera with the target frames' expression and pose
(``conditioning.projection.project_reference``: blurry, holes filled with the mean colour, hair missing), and its
timestep is drawn from the top ``1 - pseudo_min_noise`` of the schedule. The same projection, into the MPI camera,
is the network's conditioning where its config asks for it (``models.portrait_unet``'s ``projection``, ours;
``objective.frame_conditions``). ``pseudo_gt=False`` uses the exact side
view our multi-view data has instead (at every noise level): the check of what the pseudo ground truth costs.

Terms (``objective.render_losses``): the disparity term's target is the head model's rasterized disparity in the
target camera (the 3DMM as depth prior, ours); LPIPS (weight 0.1) when ``lpips`` names a user's TorchScript LPIPS
(``models.lpips``; none ships offline, so the default trains without it and says so in its config). Ours, where
the paper is silent: timesteps uniform (L_mpi); AdamW.

Every item and random draw of step k derives from (seed, k), so a killed run resumes from its last checkpoint
(``checkpoint.pt``, atomic, every ``checkpoint_every`` steps) to the same weights; ``log.csv`` keeps one row per
step; ``unet/`` (config.json + model.safetensors: the weights' EMA, ours as in ``morph4d train``) is written at
the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from morph4d.cameras import Cameras, centre_angles
from morph4d.conditioning.uvmaps import UVConditioner
from morph4d.data.format import mix_seed, select_frames
from morph4d.data.loader import MultiViewWindows, WindowConfig
from morph4d.diffusion.schedule import Diffusion, DiffusionConfig
from morph4d.errors import Morph4DError
from morph4d.io import write_json
from morph4d.mesh.raster import interpolate, rasterize
from morph4d.models.lpips import LPIPS
from morph4d.models.portrait_unet import PortraitUNet, PortraitUNetConfig
from morph4d.portrait.mpi import head_distance, plane_depths
from morph4d.portrait.objective import choose_loss, drop_conditions, frame_conditions, render_losses, trainable
from morph4d.training.train import CsvLog, save_checkpoint, update_ema

CHECKPOINT = "checkpoint.pt"
LOG_FIELDS = ("step", "stage", "loss_kind", "total", "image", "mask", "smooth", "disparity", "lpips", "seconds")


@dataclass(frozen=True)
class PortraitTrainConfig:
    data: tuple[str, ...] = ()
    unet: str = "small"              # PortraitUNetConfig preset
    frames: int = 5                  # F per clip (1 + 4k: the loader's windows; the paper's clips are 32)
    views: int = 3                   # views per window (the first is the target; the others side-view candidates)
    batch_size: int = 2
    bootstrap_steps: int = 300
    geometry_steps: int = 300
    lr: float = 2e-4
    max_side_deg: float = 25.0       # L_side only from a view this close to the target view
    checkpoint_every: int = 50
    seed: int = 0
    pseudo_gt: bool = True           # L_side's input: the reference projection (module doc), at large noise only
    pseudo_min_noise: float = 0.6    # ... timesteps from this fraction of the schedule up
    lpips: str | None = None         # a user's TorchScript LPIPS file (models.lpips); None: no LPIPS term
    ema_decay: float = 0.999         # unet/ holds the EMA of the weights (training.train.update_ema); 0: raw weights

    def __post_init__(self):
        if self.batch_size < 1 or self.bootstrap_steps < 0 or self.geometry_steps < 0 or self.checkpoint_every < 1:
            raise Morph4DError(f"invalid train-mpi config: {self}")
        if self.views < 1 or self.lr <= 0:
            raise Morph4DError(f"views must be >= 1 and lr > 0, got {self.views}, {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise Morph4DError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.pseudo_min_noise < 1:
            raise Morph4DError(f"pseudo_min_noise is a fraction of the schedule in [0, 1), got {self.pseudo_min_noise}")
        PortraitUNetConfig.preset(self.unet)          # an unknown preset is refused here

    @property
    def steps(self) -> int:
        return self.bootstrap_steps + self.geometry_steps

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


TRAIN_PRESETS = {
    "tiny": PortraitTrainConfig(unet="tiny", frames=5, views=2, batch_size=1, bootstrap_steps=2, geometry_steps=2,
                                checkpoint_every=1, ema_decay=0.5),
    "small": PortraitTrainConfig(),
}


def train_preset(name: str, **overrides) -> PortraitTrainConfig:
    if name not in TRAIN_PRESETS:
        raise Morph4DError(f"unknown train-mpi preset {name!r}; expected one of {sorted(TRAIN_PRESETS)}")
    return replace(TRAIN_PRESETS[name], **overrides)


def _camera(item: dict, v: int, size: int) -> Cameras:
    return Cameras(item["R"][v:v + 1], item["t"][v:v + 1], item["K"][v:v + 1], size, size)


class Batches:
    """Step k's batch from (seed, k): items, loss kind and the MPI / target views, built into network inputs."""

    def __init__(self, cfg: PortraitTrainConfig, size: int, planes: int, timesteps: int):
        self.cfg, self.size, self.planes, self.timesteps = cfg, size, planes, timesteps
        self.projection = PortraitUNetConfig.preset(cfg.unet).projection   # the network takes projection channels
        self.windows = MultiViewWindows(list(cfg.data), WindowConfig(views=cfg.views, frames=cfg.frames,
                                                                     resolution=size, seed=cfg.seed,
                                                                     conditioning=False,
                                                                     near_view_deg=cfg.max_side_deg))
        self.model = self.windows.model
        self.uv = UVConditioner(self.model)
        self.params = {s.name: s.params for s in self.windows.sequences}

    def __call__(self, step: int, stage: str) -> dict:
        cfg, S = self.cfg, self.size
        g = torch.Generator().manual_seed(mix_seed("train-mpi", cfg.seed, step))
        kind = "mpi" if stage == "bootstrap" else choose_loss(g)
        rows = {k: [] for k in ("frames", "reference", "target", "matte", "disparity", "depths", "mpi_cams",
                                "target_cams")}
        sides = 0
        self.windows.set_epoch(step)            # each step its own windows (views, frames, reference) of a sequence
        for _ in range(cfg.batch_size):
            item = self.windows[int(torch.randint(len(self.windows), (), generator=g))]
            m = self._mpi_view(item, kind, g)
            sides += m != 0
            params = select_frames(self.params[item["sequence"]], item["frame_index"].tolist())
            cam_m, cam_t = _camera(item, m, S), _camera(item, 0, S)
            with torch.no_grad():
                ref_params = select_frames(self.params[item["sequence"]], [int(item["reference_index"][1])])
                ref_cam = Cameras(item["reference_R"][None], item["reference_t"][None], item["reference_K"][None],
                                  S, S)
                ref_verts = self.model(ref_params)                                       # (1, N, 3)
                ref_map = self.uv.maps_of(ref_verts, ref_cam)[0]
                joint = self.model.joints(select_frames(params, [0])).reshape(-1, 3)[0]
                verts = self.model(params)                                               # (F, N, 3)
                rows["disparity"].append(head_disparity(verts, self.model.faces, cam_t))
                pseudo = m != 0 and cfg.pseudo_gt                                        # L_side: pseudo GT
                conds, projected = frame_conditions(self.uv, verts, cam_m, ref_verts[0], ref_cam,
                                                    item["reference"], self.projection or pseudo)
                if not self.projection:
                    conds = conds[:, :3]
                video = projected if pseudo else item["images"][m]
            video = video * 2 - 1                                                        # (F, 3, S, S) in [-1, 1]
            first = video[:1].expand_as(video)
            flag = torch.ones_like(video[:, :1])
            rows["frames"].append(torch.cat([video, first, flag, conds], 1))
            rows["reference"].append(torch.cat([item["reference"] * 2 - 1, ref_map], 0))
            rows["target"].append(item["images"][0])
            rows["matte"].append(item["alpha"][0])
            rows["depths"].append(plane_depths(head_distance(cam_m, joint), self.planes).float())
            rows["mpi_cams"].append(Cameras.cat([cam_m] * cfg.frames))
            rows["target_cams"].append(Cameras.cat([cam_t] * cfg.frames))
        out = {k: torch.stack(v) if k not in ("mpi_cams", "target_cams") else v for k, v in rows.items()}
        out["kind"] = "side" if sides else "mpi"
        out["generator"] = g
        # the pseudo ground truth's large noise levels apply to the whole batch of an L_side step
        out["t_min"] = int(cfg.pseudo_min_noise * self.timesteps) if sides and cfg.pseudo_gt else 0
        return out

    def _mpi_view(self, item: dict, kind: str, g: torch.Generator) -> int:
        """0 for L_mpi; for L_side a random other view within ``max_side_deg`` of view 0 (the loader puts one
        second when the rig has one), else 0."""
        if kind != "side" or item["R"].shape[0] < 2:
            return 0
        V = item["R"].shape[0]
        angle = centre_angles(Cameras(item["R"], item["t"], item["K"], self.size, self.size))[0]
        close = [v for v in range(1, V) if float(angle[v]) <= self.cfg.max_side_deg]
        return close[int(torch.randint(len(close), (), generator=g))] if close else 0


def head_disparity(verts: torch.Tensor, faces: torch.Tensor, camera: Cameras) -> torch.Tensor:
    """The head mesh ``verts`` (F, N, 3) rasterized into ``camera`` (one): disparity 1 / z (F, 1, H, W), 0 off it."""
    cams = Cameras.cat([camera] * verts.shape[0])
    r = rasterize(verts, faces, cams)
    z = interpolate(torch.einsum("fnj,fij->fni", verts, cams.R) + cams.t[:, None], faces, r)[..., 2]
    return torch.where(r.mask, 1 / z.clamp(min=1e-6), torch.zeros_like(z))[:, None].float()


def training_step(net: PortraitUNet, diffusion: Diffusion, batch: dict, lpips=None) -> dict:
    """One loss evaluation (module doc) on ``batch`` (``Batches``): the weighted terms, "total" with a graph.
    ``lpips``: a ``models.lpips.LPIPS`` or None."""
    g = batch["generator"]
    x0 = batch["frames"][:, :, :3]
    T, t_min = diffusion.cfg.num_train_timesteps, batch["t_min"]
    t = t_min + torch.randint(T - t_min, (x0.shape[0],), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    frames = batch["frames"].clone()
    frames[:, :, :3] = diffusion.add_noise(x0, noise, t)
    frames, reference, _, _ = drop_conditions(frames, batch["reference"], g)
    out = net(frames, t, reference)
    return render_losses(out, batch["target"], batch["matte"], batch["depths"], batch["mpi_cams"],
                         batch["target_cams"], target_disparity=batch["disparity"],
                         lpips=lpips.loss if lpips is not None else None)


def train_portrait(cfg: PortraitTrainConfig, out_dir, stop_after: int | None = None, log=print) -> Path:
    """Run (or resume) ``cfg`` in ``out_dir`` -> ``out_dir/unet``; ``stop_after``: return after that step (tests
    of resuming). Inputs are read and checked before anything is written."""
    if not cfg.data:
        raise Morph4DError("train-mpi needs at least one dataset: --data DIR")
    out = Path(out_dir)
    unet_cfg = PortraitUNetConfig.preset(cfg.unet)
    diffusion = Diffusion(DiffusionConfig(snr_shift_scale=1.0))
    batches = Batches(cfg, unet_cfg.sample_size, unet_cfg.planes, diffusion.cfg.num_train_timesteps)
    lpips = LPIPS(cfg.lpips) if cfg.lpips else None                              # a wrong file is refused here
    text = json.dumps(cfg.to_json(), sort_keys=True)
    state = None
    if (out / CHECKPOINT).is_file():
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
        if state.get("config") != text:
            raise Morph4DError(f"{out / CHECKPOINT} was written by another train-mpi config; use a new --out folder "
                               f"or the same arguments (its config: {state.get('config')})")
    net = PortraitUNet(unet_cfg, generator=torch.Generator().manual_seed(cfg.seed))
    step = 0
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if state is not None:
        net.load_state_dict(state["model"])
        ema, step = state["ema"], state["step"]
    write_json(out / "config.json", {"train": cfg.to_json(), "unet": asdict(unet_cfg)})
    stage = "bootstrap" if step < cfg.bootstrap_steps else "geometry"
    opt = torch.optim.AdamW(trainable(net, stage), lr=cfg.lr)
    if state is not None and state.get("stage") == stage:
        opt.load_state_dict(state["optimizer"])
    logfile = CsvLog(out / "log.csv", LOG_FIELDS, step)
    while step < cfg.steps:
        if step == cfg.bootstrap_steps and stage == "bootstrap":
            stage = "geometry"
            opt = torch.optim.AdamW(trainable(net, stage), lr=cfg.lr)
        t0 = time.perf_counter()
        batch = batches(step, stage)
        terms = training_step(net, diffusion, batch, lpips)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        update_ema(ema, net, cfg.ema_decay)
        step += 1
        logfile.write({"step": step, "stage": stage, "loss_kind": batch["kind"],
                       **{k: f"{float(terms[k].detach()):.6g}" if k in terms else ""
                          for k in ("total", "image", "mask", "smooth", "disparity", "lpips")},
                       "seconds": f"{time.perf_counter() - t0:.3f}"})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(out / CHECKPOINT, {"config": text, "step": step, "stage": stage, "model": net.state_dict(),
                                               "ema": ema, "optimizer": opt.state_dict()})
            log(f"[train-mpi] step {step}/{cfg.steps} ({stage}, {batch['kind']}): loss "
                f"{float(terms['total'].detach()):.4f}")
        if stop_after is not None and step >= stop_after:
            return out
    net.load_state_dict(ema)
    net.save_pretrained(out / "unet")
    return out


__all__ = ["PortraitTrainConfig", "TRAIN_PRESETS", "train_preset", "Batches", "training_step", "train_portrait",
           "CHECKPOINT"]
