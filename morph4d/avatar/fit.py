"""Fitting Gaussians bound to the head mesh to multi-view videos (MVP4D §4, S2.4; GaussianAvatars).

``morph4d fit`` reads a dataset sequence (format v1, synthetic ground truth or imported) or the output of
``morph4d generate`` (its manifest.json) and fits a 4D avatar:

* initialisation: one Gaussian per triangle (GaussianAvatars), except on triangles that face none of the
  training cameras in any frame (MVP4D S2.4 culls them), plus off-mesh Gaussians for hair and glasses from
  keypoints triangulated across views (``gaussians/offmesh.py``);
* per-frame deformation: a UV-space U-Net on MVP4D's frame embedding + CAP4D's UV encoding adds position
  and rotation offsets in each triangle's frame (``model.py`` documents the channels);
* the reference image (ours, issue 17; when the generated folder carries it): the one real picture joins the
  generated views as an extra observation, drawn in ``reference_share`` of the iterations, posed by its own
  tracked mesh and camera, with the deformation of the generated frame nearest its expression; pixels outside
  the original photo (its outcrop mask) are not compared. MVP4D fits the generated videos only (§4);
* one (view, frame) per iteration, with the neighbouring frame f +- 1 evaluated too for MVP4D's velocity
  terms (rotation 0.005, deformation 0.4), the U-Net map's Laplacian, GaussianAvatars' photometric and
  position / scale terms (``gaussians/losses.py``); Gaussians on triangles facing away from the view are
  dropped with p = 0.2 (MVP4D S2.4);
* 3DGS density control by view-space gradient, keeping >= 1 Gaussian per triangle (``gaussians/densify.py``);
* Adam with one group per raw tensor + one for the U-Net; atomic checkpoints; a killed run resumes at the
  same iteration with the same random state, Gaussians, U-Net and density statistics.

Loop: sample (view, frame, neighbour) -> back-face dropout -> deform + place the kept Gaussians (the
neighbour frame: rotations only) -> render -> loss -> backward -> step -> density control -> log / checkpoint.
The mesh is fixed, so triangle frames and facing tests are computed once per frame / (view, frame).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from morph4d.avatar.gaussians import (
    BoundGaussians,
    matrix_to_quaternion,
    render_gaussians,
    triangle_frames,
)
from morph4d.avatar.gaussians.deform import DeformationUNet, DeformationUNetConfig, gaussian_uvs
from morph4d.avatar.gaussians.densify import DensifyConfig, DensifyState, densify_and_prune
from morph4d.avatar.gaussians.losses import LossWeights, backface_dropout, facing_camera, never_facing, total_loss
from morph4d.avatar.gaussians.offmesh import OffMeshConfig, offmesh_gaussians
from morph4d.avatar.model import DEFORM_CHANNELS, deform_gaussians, deformation_offsets, load_avatar, save_avatar
from morph4d.cameras import Cameras
from morph4d.data.format import read_sequence, select_frames
from morph4d.errors import Morph4DError
from morph4d.generation.videos import PARAM_KEYS, is_generated, read_videos
from morph4d.heads import HeadParams, load_head_model
from morph4d.io import atomic_path, write_json
from morph4d.metrics import psnr

CHECKPOINT = "fit_checkpoint.pt"
# A CPU-sized U-Net: 64 x 64 UV map (CAP4D: 128), 4 levels, 16..64 channels, 6 output channels.
FIT_DEFORM = DeformationUNetConfig(size=64, base_channels=16, max_channels=64, depth=4, out_channels=DEFORM_CHANNELS)
GAUSSIAN_FIELDS = ("local_means", "log_scales", "quats", "opacity_logits", "sh")
DEMO_ITERATIONS = 1200  # FIT_PRESETS["demo"]: measured in benchmarks/bench_fit.py --demo (README)
REFERENCE_SHARE = 0.15  # chosen on validation identities (README, "Quality report": the reference image in the fit)


@dataclass(frozen=True)
class FitConfig:
    """Hyperparameters of ``fit_sequence``; ``None`` in ``deformation`` / ``densify`` / ``offmesh`` turns
    that part off (the first fit of issue 8 had none of them)."""
    iterations: int = 2000
    resolution: int | None = None     # render/compare at this size (default: the images' size)
    sh_degree: int = 1                # 1 generalised best to unseen views (README: 3 overfits the training views)
    lr_means: float = 5e-3            # local means are in units of the triangle scale k
    lr_means_final: float | None = 5e-5  # 3DGS: the means' rate decays exponentially to this at the last step
    lr_scales: float = 1.7e-2         # GaussianAvatars' rates for log-scales, rotations, opacity, colour
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_sh: float = 2.5e-3
    lr_deform: float = 5e-4           # U-Net (Adam)
    deformation: DeformationUNetConfig | None = FIT_DEFORM
    # 3DGS's threshold 2e-4 gave the same held-out PSNR with a third more Gaussians (README)
    densify: DensifyConfig | None = DensifyConfig(grad_threshold=4e-4)
    offmesh: OffMeshConfig | None = OffMeshConfig()
    cull_backfaces: bool = True       # MVP4D S2.4: no Gaussians on triangles that never face a camera
    backface_dropout: float = 0.2     # MVP4D S2.4: drop Gaussians facing away from the training view
    train_views: tuple[int, ...] | None = None  # views to fit (default all); the others stay held out
    train_frames: tuple[int, ...] | None = None  # frames to fit (default all); the others stay held out (their
                                                 # meshes still pose the avatar; no image of theirs is seen)
    reference_share: float = REFERENCE_SHARE  # of the iterations, the share that fits the reference image (ours,
                                              # issue 17); only generated folders that carry one have it
    checkpoint_every: int = 200
    log_every: int = 50
    seed: int = 0

    def check(self) -> None:
        if self.resolution is not None and not 8 <= self.resolution <= 2048:
            raise Morph4DError(f"the fit's resolution must be 8 to 2048 px (or the images' own), got {self.resolution}")
        if not 0 <= self.reference_share < 1:
            raise Morph4DError(f"the reference share must be in [0, 1) (the fraction of iterations on the reference "
                               f"image), got {self.reference_share}")
        if self.iterations < 1 or self.checkpoint_every < 1 or not 0 <= self.sh_degree <= 3 \
                or not 0 <= self.backface_dropout <= 1:
            raise Morph4DError(f"invalid fit configuration: {self}")
        if self.deformation is not None and self.deformation.out_channels != DEFORM_CHANNELS:
            raise Morph4DError(f"the deformation U-Net must have out_channels={DEFORM_CHANNELS} (position + rotation)")

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        """Inverse of ``asdict`` (as written to fit_config.json)."""
        d = dict(d)
        for key, kind in (("deformation", DeformationUNetConfig), ("densify", DensifyConfig), ("offmesh", OffMeshConfig)):
            if d.get(key) is not None:
                d[key] = kind(**d[key])
        for key in ("train_views", "train_frames"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# Named configurations. "demo": the fit of `morph4d avatar` / `make demo` (8 generated views x 25 frames at
# 64 px), sized to take at most 5 minutes on a 2-core CPU (README, "Avatar fit quality and speed").
FIT_PRESETS = {
    "default": FitConfig(),
    "demo": FitConfig(iterations=DEMO_ITERATIONS),
}


@dataclass
class ReferenceView:
    """The reference image as an observation of the fit: image (3, S, S), outcrop (S, S) bool (True = outside
    the photo: not compared) or None, its camera and head parameters (one frame, leading dim 1), and ``frame``:
    the generated frame whose deformation it shares (the nearest expression, jaw and eyes)."""
    image: torch.Tensor
    outcrop: torch.Tensor | None
    camera: Cameras
    params: HeadParams
    frame: int


def reference_view(ref, params: HeadParams, size: int) -> ReferenceView:
    """``ReferenceView`` of a generated folder's reference (``generation.videos``) at ``size`` px."""
    one = HeadParams(**{k: getattr(ref.params, k)[None] if k != "shape" else ref.params.shape for k in PARAM_KEYS})
    dist = sum(((getattr(params, k) - getattr(one, k)) ** 2).flatten(1).sum(1) for k in ("expression", "jaw", "eyes"))
    outcrop = None
    if ref.outcrop is not None:
        outcrop = _resize(ref.outcrop[None, None, None], size)[0, 0, 0] > 0.5
    return ReferenceView(_resize(ref.image[None, None], size)[0, 0], outcrop, ref.camera.resized(size, size), one,
                         int(dist.argmin()))


@dataclass
class FitData:
    """What a fit reads: images (V, F, 3, S, S) in [0, 1], V cameras at S px, per-frame params, head model,
    foreground masks (V, F, S, S) in [0, 1] (a dataset's alpha; for generated videos, pixels that differ
    from the white background by more than ``WHITE_TOLERANCE``)."""
    name: str
    images: torch.Tensor
    cameras: Cameras
    params: HeadParams
    head_model: str
    masks: torch.Tensor
    reference: ReferenceView | None = None

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


WHITE_TOLERANCE = 0.06  # generated videos have a white background; darker than 1 - this in any channel = head


def load_fit_data(path: str | Path, resolution: int | None = None) -> FitData:
    """A dataset sequence folder (format v1) or a `morph4d generate` output folder (``manifest.json``)."""
    path = Path(path)
    reference = None
    if is_generated(path):
        gen = read_videos(path)
        reference = gen.reference
        imgs, cams, params, head_model, name = gen.images, gen.cameras, gen.params, gen.head_model, path.name
        if cams.width != cams.height:
            raise Morph4DError(f"{path}: fitting expects square images, got {cams.width}x{cams.height}")
        masks = ((1 - imgs).amax(2) > WHITE_TOLERANCE).float()  # (V, F, H, W)
    else:
        seq = read_sequence(path)
        if int(seq.meta["width"]) != int(seq.meta["height"]):
            raise Morph4DError(f"sequence '{seq.name}': fitting expects square images, got "
                               f"{seq.meta['width']}x{seq.meta['height']}")
        rgb, masks = seq.read_images(range(seq.num_views), range(seq.num_frames))
        imgs, cams, params = rgb.permute(0, 1, 4, 2, 3), seq.cameras, seq.params
        name, head_model = seq.name, seq.meta["head_model"]
    size = resolution or cams.width
    return FitData(name, _resize(imgs, size), cams.resized(size, size), params, head_model,
                   _resize(masks[:, :, None], size)[:, :, 0],
                   None if reference is None else reference_view(reference, params, size))


class PhaseClock:
    """Wall and CPU (process) seconds per phase of the fit loop, for ``benchmarks/bench_fit.py``:
    ``with clock("render"): ...``. ``fit_sequence`` without one runs the same code under a null context."""

    PHASES = ("sample", "deform", "dropout", "render", "loss", "backward", "adam", "densify", "log")

    def __init__(self):
        self.wall, self.cpu, self.iterations = defaultdict(float), defaultdict(float), 0

    @contextlib.contextmanager
    def __call__(self, phase: str):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[phase] += time.perf_counter() - wall
            self.cpu[phase] += time.process_time() - cpu


def _no_clock(phase: str):
    return contextlib.nullcontext()


def initial_gaussians(seq: FitData, head, vertices: torch.Tensor, cfg: FitConfig, views: list[int], log=print,
                      frame: int = 0) -> BoundGaussians:
    """One Gaussian per triangle facing a training camera in some frame (all triangles without
    ``cull_backfaces``), plus the off-mesh Gaussians of ``cfg.offmesh`` (MVP4D S2.4) from the images of ``frame``
    (a training frame)."""
    triangles = torch.arange(head.faces.shape[0])
    if cfg.cull_backfaces:
        triangles = triangles[~never_facing(vertices, head.faces, seq.cameras[views])]
    bound = BoundGaussians.one_per_triangle(triangles, sh_degree=cfg.sh_degree)
    if cfg.offmesh is not None:
        extra = offmesh_gaussians(seq.images[views, frame], seq.cameras[views], vertices[frame], head.faces,
                                  cfg.offmesh, sh_degree=cfg.sh_degree, masks=seq.masks[views, frame] > 0.5)
        bound = BoundGaussians(**{k: torch.cat([a, b]) for (k, a), b in
                                  zip(bound.state_dict().items(), extra.state_dict().values())})
        log(f"init: {len(triangles)} of {head.faces.shape[0]} triangles face a training camera; "
            f"{len(extra)} off-mesh Gaussians from triangulated keypoints")
    return bound


def fit_sequence(sequence: str | Path, out: str | Path, cfg: FitConfig = FitConfig(), flame_path=None,
                 log=print, stop_after: int | None = None, clock: PhaseClock | None = None) -> dict:
    """Fit (or resume fitting) an avatar to a dataset sequence or generated videos (``load_fit_data``);
    writes ``out/avatar.safetensors`` (``morph4d.avatar.model``) when the last iteration is done. ``clock``
    collects the seconds of each phase of the loop (``PhaseClock``)."""
    cfg.check()
    seq = load_fit_data(sequence, cfg.resolution)
    out = Path(out)
    head = load_head_model(seq.head_model, flame_path=flame_path)
    cameras, images, F = seq.cameras, seq.images, seq.num_frames
    views = list(range(seq.num_views)) if cfg.train_views is None else list(cfg.train_views)
    if not views or min(views) < 0 or max(views) >= seq.num_views:
        raise Morph4DError(f"train_views must index the sequence's {seq.num_views} views, got {cfg.train_views}")
    fitted = list(range(F)) if cfg.train_frames is None else list(cfg.train_frames)
    if not fitted or min(fitted) < 0 or max(fitted) >= F:
        raise Morph4DError(f"train_frames must index the sequence's {F} frames, got {cfg.train_frames}")
    identity = json.loads(json.dumps({"sequence": str(Path(sequence).resolve()), "config": asdict(cfg),
                                      "reference": seq.reference is not None}))
    ref = seq.reference if cfg.reference_share > 0 else None
    with torch.no_grad():
        vertices = head(seq.params)  # (F, N, 3)
        ref_vertices = None if ref is None else head(ref.params)[0]   # the reference's own mesh: geometry[F]
        # The mesh is fixed during the fit: its triangle frames (GaussianAvatars) are computed once per frame.
        geometry = []
        for verts in list(vertices) + ([] if ref is None else [ref_vertices]):
            R, k, centroid = triangle_frames(verts, head.faces)
            geometry.append((R, k, centroid, matrix_to_quaternion(R)))
    if ref is not None:
        log(f"the reference image joins the fit in {cfg.reference_share:.0%} of the iterations (deformation of "
            f"frame {ref.frame})")
    ckpt_path = out / CHECKPOINT
    state = None
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        if json.loads(state["identity"]) != identity:
            raise Morph4DError(f"{out} holds a fit of another sequence or configuration; use another folder")
        bound = BoundGaussians.from_state_dict(state["gaussians"])
        step = int(state["step"])
    else:
        bound = initial_gaussians(seq, head, vertices, cfg, views, log, fitted[0])
        step = 0
    g = torch.Generator().manual_seed(cfg.seed)
    net = None
    if cfg.deformation is not None:
        net = DeformationUNet(cfg.deformation, generator=torch.Generator().manual_seed(cfg.seed))
    for name in GAUSSIAN_FIELDS:
        getattr(bound, name).requires_grad_(True)
    lrs = {"local_means": cfg.lr_means, "log_scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacity_logits": cfg.lr_opacity, "sh": cfg.lr_sh}
    groups = [{"params": [getattr(bound, k)], "lr": lrs[k], "name": k} for k in GAUSSIAN_FIELDS]
    if net is not None:
        groups.append({"params": list(net.parameters()), "lr": cfg.lr_deform, "name": "deform"})
    opt = torch.optim.Adam(groups, eps=1e-15, foreach=True)
    dstate = DensifyState.zeros(len(bound))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        dstate = DensifyState(**state["densify"])
        if net is not None:
            net.load_state_dict(state["deform"])
    write_json(out / "fit_config.json", {"fit": asdict(cfg), "sequence": identity["sequence"]})
    weights = LossWeights()
    last = {}

    def save() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"identity": json.dumps(identity), "step": step,
                        "gaussians": {k: t.detach() for k, t in bound.state_dict().items()},
                        "optimizer": opt.state_dict(), "generator": g.get_state(), "densify": dstate.state_dict(),
                        "deform": net.state_dict() if net is not None else {}}, tmp)

    end = cfg.iterations if stop_after is None else min(cfg.iterations, stop_after)
    dc = cfg.densify
    phase = _no_clock if clock is None else clock
    facing: dict[tuple[int, int], torch.Tensor] = {}  # (view, frame) -> (T,) triangles facing it; the mesh is fixed
    if ref is not None:                               # the reference: view -1, its own mesh (geometry[F])
        with torch.no_grad():
            facing[-1, F] = facing_camera(ref_vertices, head.faces, ref.camera)[0]
    uvs = None  # each Gaussian's UV, until density control changes the Gaussians
    while step < end:
        # 1. data: a training view, a frame and (for the velocity terms) a neighbouring frame
        with phase("sample"):
            v = views[int(torch.randint(len(views), (1,), generator=g))]
            f = fitted[int(torch.randint(len(fitted), (1,), generator=g))]
            frames = [f]
            if net is not None and F > 1:
                frames.append(f + 1 if f + 1 < F else f - 1)
            on_ref = ref is not None and float(torch.rand((), generator=g)) < cfg.reference_share
            if on_ref:       # the reference: its own mesh and camera, the deformation of its nearest frame
                v, f, frames = -1, F, [ref.frame]
            camera = ref.camera if on_ref else cameras[[v]]
        # 2. back faces: drop Gaussians of triangles facing away from this view with p = 0.2 (MVP4D S2.4). First,
        #    so that everything after it computes only the kept Gaussians (the U-Net draws no random numbers).
        with phase("dropout"):
            if (v, f) not in facing:
                with torch.no_grad():
                    facing[v, f] = facing_camera(vertices[f], head.faces, camera)[0]
            keep = backface_dropout(bound, facing[v, f], cfg.backface_dropout, generator=g).nonzero()[:, 0]
            sub = bound.select(keep)
        # 3. forward: deform (U-Net, MVP4D S2.4), pose, bind; of the neighbouring frame only the rotations
        with phase("deform"):
            terms_in = {}
            if net is not None:
                if uvs is None:
                    uvs = gaussian_uvs(head, bound)
                maps, offsets = deformation_offsets(net, uvs[keep], torch.tensor(frames), F)  # (2, G', 6)
                world = deform_gaussians(sub, offsets[0]).place(*geometry[f])
                terms_in["deform_map"] = maps
                if len(frames) == 2:
                    neighbour = deform_gaussians(sub, offsets[1]).world_quats(geometry[frames[1]][3])
                    terms_in["world_quats"] = torch.stack([world.quats, neighbour])
                    terms_in["deform"] = offsets[:, :, :3]
            else:
                world = sub.place(*geometry[f])
        with phase("render"):
            r = render_gaussians(world.means, world.quats, world.scales, world.opacities, world.sh, camera)
            if dc is not None and r.means2d is not None:
                r.means2d.retain_grad()
            pred = r.image.permute(0, 3, 1, 2)  # (1, 3, H, W)
            target = images[v, f][None] if not on_ref else ref.image[None]
            if on_ref and ref.outcrop is not None:    # outside the photo: nothing to compare with
                target = torch.where(ref.outcrop, pred.detach(), target)
        # 4. losses, backward, step (3DGS's exponential decay of the means' learning rate)
        with phase("loss"):
            loss, terms = total_loss(pred, target, local_means=sub.local_means,
                                     log_scales=sub.log_scales, weights=weights, **terms_in)
        with phase("backward"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with phase("adam"):
            if cfg.lr_means_final is not None:
                means_group = next(grp for grp in opt.param_groups if grp["name"] == "local_means")
                means_group["lr"] = cfg.lr_means * (cfg.lr_means_final / cfg.lr_means) ** (step / cfg.iterations)
            opt.step()
            step += 1
        # 5. density control (3DGS): accumulate view-space gradients, clone / split / prune
        with phase("densify"):
            if dc is not None and r.means2d is not None and r.means2d.grad is not None:
                vis = r.visible[0]
                dstate.add(keep[vis], r.means2d.grad[0][vis], cameras.width)
                if dc.start <= step < dc.stop and step % dc.every == 0:
                    bound, dstate, stats = densify_and_prune(bound, dstate, dc, opt, generator=g)
                    uvs = None
                    log(f"step {step}: density control {stats}")
        with phase("log"):
            last = {"step": step, "loss": float(loss.detach()), "psnr": psnr(pred.detach(), target),
                    "gaussians": len(bound)}
            if step % cfg.log_every == 0 or step == end:
                log(f"step {step}/{cfg.iterations}: loss {last['loss']:.4f}, PSNR {last['psnr']:.2f} dB, "
                    f"{len(bound)} Gaussians")
            if step % cfg.checkpoint_every == 0 or step == end:
                save()
        if clock is not None:
            clock.iterations += 1
    if step >= cfg.iterations:
        save_avatar(out, bound, head.name, F, net, fitted_params=seq.params, extra={"sequence": seq.name})
    return last


def evaluate(sequence: str | Path, out: str | Path, views=None, frames=None, resolution: int | None = None,
             flame_path=None) -> float:
    """Mean PSNR of the fitted avatar against the sequence's images (all or the given views/frames),
    each frame with its fitted deformation."""
    seq = load_fit_data(sequence, resolution)
    avatar = load_avatar(out, flame_path=flame_path)
    images = seq.images
    views = list(range(seq.num_views) if views is None else views)
    frames = range(seq.num_frames) if frames is None else frames
    scores = []
    with torch.no_grad():
        for f in frames:
            world = avatar.world(avatar.vertices(select_frames(seq.params, f)), f if f < avatar.num_frames else None)
            r = render_gaussians(world.means, world.quats, world.scales, world.opacities, world.sh, seq.cameras[views])
            scores += [psnr(r.image[k].permute(2, 0, 1), images[v, f]) for k, v in enumerate(views)]
    return sum(scores) / len(scores) if scores else math.nan
