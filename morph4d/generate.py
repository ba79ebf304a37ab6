"""``morph4d generate``: one tracked reference image + an animation -> synchronized multi-view videos
(MVP4D §4), by running the sampling plan (``plan.py``) with the MMVDM, the video autoencoder and
multi-view classifier-free guidance.

Outputs in ``out``: ``plan.json`` + ``jobs/`` (resumable state), ``views/VIEW/FRAME.png`` and
``views/VIEW.mp4`` per view, ``grid.mp4`` (all views tiled), and ``manifest.json`` (cameras, per-frame
head parameters, seeds, versions) that the 4D fitting reads. Every file is written atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from morph4d import __version__
from morph4d.cameras import Cameras, view_set
from morph4d.conditioning import HeadConditioner, check_frame_count
from morph4d.diffusion import Diffusion
from morph4d.heads import HeadModel
from morph4d.heads.animation import Animation
from morph4d.io import write_json
from morph4d.plan import PRESETS, Job, PlanRun, build_plan, job_seed
from morph4d.reference import Reference, canonicalize, view_angles
from morph4d.sampling import angular_guidance_scales, ddim_sample, guidance
from morph4d.video import grid, write_mp4, write_png


@dataclass(frozen=True)
class GenerateConfig:
    preset: str = "small"          # "120", "360" or "small" (PRESETS in plan.py)
    guidance: str = "multiview"    # "multiview", "cfg" or "none" (MVP4D Table 7)
    seed: int = 0
    radius: float = 0.75           # camera distance of the generated views (m)
    fov: float = 26.0              # their vertical field of view (deg)
    key_steps: int | None = None   # override the preset's DDIM steps
    other_steps: int | None = None


class MultiViewGenerator:
    """The job runner and overlap encoder of a plan: MMVDM + VAE + conditioning for one reference."""

    def __init__(self, model, vae, head: HeadModel, reference: Reference, animation: Animation,
                 cameras: Cameras, view_angles_deg: tuple[torch.Tensor, torch.Tensor], frames_per_window: int,
                 guidance_kind: str = "multiview", diffusion: Diffusion | None = None):
        self.model, self.vae, self.head = model, vae, head
        self.diffusion = Diffusion.for_model(model) if diffusion is None else diffusion
        self.cond = HeadConditioner(head)
        self.ref = canonicalize(reference, head)
        self.anim, self.cameras, self.F = animation, cameras, frames_per_window
        self.az, self.el = view_angles_deg
        self.ref_az, self.ref_el = view_angles(self.ref.camera)
        self.guidance_kind = guidance_kind
        H, W = cameras.height, cameras.width
        if (self.ref.camera.height, self.ref.camera.width) != (H, W):
            raise ValueError(f"the reference image is {self.ref.camera.width}x{self.ref.camera.height} but the "
                             f"views are {W}x{H}; crop/resize the reference to the model's resolution first")
        with torch.no_grad():
            self.ref_latent = vae.encode_image(self.ref.image[None])  # (1, 16, h, w)
            outcrop = None
            if self.ref.outcrop is not None:
                outcrop = torch.nn.functional.avg_pool2d(self.ref.outcrop[None, None], 8)[0, 0].round()
            self.ref_cond = self.cond.reference(self.ref.params, self.ref.camera, outcrop)[None]

    def window_params(self, start: int):
        p = self.anim.params
        sl = slice(start, start + self.F)
        return p.replace(**{k: getattr(p, k)[sl] for k in ("expression", "jaw", "neck", "eyes", "rotation",
                                                            "translation")})

    def __call__(self, job: Job, given: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                 callback=None) -> torch.Tensor:
        """Sample one job: latents ``(V_job, F_lat, 16, h, w)``."""
        cams = self.cameras[job.views]
        with torch.no_grad():
            cond = self.cond.video(self.window_params(job.start), cams, self.ref.camera, given=mask)[None]
            # guidance scale per view from its angle to the nearest reference view (the reference image
            # and the views given whole), MVP4D §4
            ref_az = torch.tensor([self.ref_az] + [float(self.az[v]) for v in job.given_views])
            ref_el = torch.tensor([self.ref_el] + [float(self.el[v]) for v in job.given_views])
            scale = angular_guidance_scales(self.az[job.views], self.el[job.views], ref_az, ref_el)
            denoise = guidance(self.guidance_kind, self.model, self.diffusion, cond, self.ref_latent,
                               self.ref_cond, scale)
            noise = torch.randn(given[None].shape, generator=generator)
            out = ddim_sample(denoise, self.diffusion, noise, job.steps, given=given[None], given_mask=mask[None],
                              callback=callback)
        return out[0]

    def encode_overlap(self, latents: torch.Tensor, overlap: int) -> torch.Tensor:
        """The last ``overlap`` frames of a decoded window, re-encoded as the next window's first latents."""
        with torch.no_grad():
            frames = self.vae.decode(latents[None, None])[0, 0]  # (F, 3, H, W)
            return self.vae.encode(frames[None, None, -overlap:])[0, 0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.decode(latents[None, None])[0, 0]  # (F, 3, H, W) in [0, 1]


def run_generate(out: str | Path, model, vae, head: HeadModel, reference: Reference, animation: Animation,
                 cfg: GenerateConfig, identity: dict, rank: int = 0, world: int = 1, barrier=lambda: None,
                 log=print) -> dict:
    """Plan, sample (resumably, split over ``world`` processes), decode and write the outputs."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset '{cfg.preset}'; expected one of {sorted(PRESETS)}")
    pcfg = PRESETS[cfg.preset]
    overrides = {k: v for k, v in (("key_steps", cfg.key_steps), ("other_steps", cfg.other_steps),
                                   ("seed", cfg.seed)) if v is not None}
    pcfg = type(pcfg)(**{**asdict(pcfg), **overrides})
    if animation.num_frames < pcfg.total_frames:
        raise ValueError(f"the '{cfg.preset}' preset generates {pcfg.total_frames} frames but the animation "
                         f"'{animation.name}' has {animation.num_frames}; give a longer animation (--frames)")
    check_frame_count(pcfg.frames_per_window)
    vs = view_set(pcfg.views)
    res = reference.camera.width
    cameras = vs.cameras(cfg.radius, cfg.fov, res, res)
    gen = MultiViewGenerator(model, vae, head, reference, animation, cameras, (vs.azimuth, vs.elevation),
                             pcfg.frames_per_window, cfg.guidance)
    run = PlanRun(out, pcfg, {**identity, "guidance": cfg.guidance, "radius": cfg.radius, "fov": cfg.fov})
    h = w = res // 8
    latent_shape = ((pcfg.frames_per_window - 1) // 4 + 1, 16, h, w)
    todo = sum(not run.done(j.id) for j in run.jobs)
    show = rank == 0
    # two bars: jobs of this run (with tqdm's ETA) and the DDIM steps of the job in progress
    with tqdm(total=todo, desc="jobs", unit="job", position=0, disable=not show) as jobs_bar:
        def runner(job, given, mask, generator):
            with tqdm(total=job.steps, desc=f"{job.id} (mode {job.mode}, {len(job.views)} views)", unit="step",
                      position=1, leave=False, disable=not show) as bar:
                return gen(job, given, mask, generator, callback=lambda i, n, x0: bar.update(1))
        run.run(runner, gen.encode_overlap, latent_shape, rank=rank, world=world, barrier=barrier,
                progress=lambda job_id, done, total: jobs_bar.update(1))
    if rank != 0:
        return {}
    return write_outputs(Path(out), run, gen, vs, cameras, animation, pcfg, log)


def write_outputs(out: Path, run: PlanRun, gen: MultiViewGenerator, vs, cameras: Cameras, animation: Animation,
                  pcfg, log) -> dict:
    """Decode every view, write PNG frames, per-view MP4s, a grid MP4 and the manifest."""
    V, T = len(vs.azimuth), pcfg.total_frames
    videos = []
    for v in range(V):
        frames = run.frames_of(gen.decode, v).clamp(0, 1).permute(0, 2, 3, 1)  # (T, H, W, 3)
        for f in range(T):
            write_png(out / "views" / f"{v:02d}" / f"{f:04d}.png", frames[f])
        write_mp4(out / "views" / f"{v:02d}.mp4", frames, fps=animation.fps)
        videos.append(frames)
    cols = math.ceil(math.sqrt(V))
    tiles = torch.stack(videos, 1)  # (T, V, H, W, 3)
    write_mp4(out / "grid.mp4", torch.stack([grid(tiles[f], cols=cols, pad=2) for f in range(T)]),
              fps=animation.fps)
    p = animation.params
    manifest = {
        "version": 1, "morph4d": __version__, "frames": T, "fps": animation.fps, "head_model": gen.head.name,
        "views": [{"index": v, "azimuth": float(vs.azimuth[v]), "elevation": float(vs.elevation[v]),
                   "key": bool(vs.key[v]), "frames": f"views/{v:02d}/%04d.png", "video": f"views/{v:02d}.mp4",
                   "R": cameras.R[v].tolist(), "t": cameras.t[v].tolist(), "K": cameras.K[v].tolist(),
                   "width": cameras.width, "height": cameras.height} for v in range(V)],
        "params": {k: getattr(p, k)[:T].tolist() if k != "shape" else gen.ref.params.shape.tolist()
                   for k in ("shape", "expression", "jaw", "neck", "eyes", "rotation", "translation")},
        "seeds": {j.id: job_seed(pcfg.seed, j.id) for j in build_plan(pcfg)},
        "plan": asdict(pcfg),
    }
    write_json(out / "manifest.json", manifest)
    log(f"wrote {V} views x {T} frames to {out / 'views'}, {out / 'grid.mp4'} and {out / 'manifest.json'}")
    return {"manifest": str(out / "manifest.json"), "grid": str(out / "grid.mp4")}


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}; run `morph4d generate` (or `morph4d data ...`) first")
    return json.loads(path.read_text())


def init_models(out: str | Path, mmvdm_preset: str = "small", vae_preset: str = "small", seed: int = 0,
                cogvideox: str | None = None) -> Path:
    """Write an untrained model folder ``out/mmvdm`` + ``out/vae`` (safetensors + config.json), or with
    ``cogvideox`` the MMVDM initialised from a local CogVideoX-2B folder (``MMVDM.from_cogvideox``)."""
    from morph4d.models import MMVDM, VAE_PRESETS, CausalVideoAutoencoder, MMVDMConfig
    out = Path(out)
    g = torch.Generator().manual_seed(seed)
    if cogvideox is not None:
        MMVDM.from_cogvideox(cogvideox).save_pretrained(out / "mmvdm")
    else:
        MMVDM(MMVDMConfig.preset(mmvdm_preset), generator=g).save_pretrained(out / "mmvdm")
        if vae_preset not in VAE_PRESETS:
            raise ValueError(f"unknown VAE preset '{vae_preset}'; expected one of {sorted(VAE_PRESETS)}")
        CausalVideoAutoencoder(VAE_PRESETS[vae_preset], generator=g).save_pretrained(out / "vae")
    return out


DEFAULT_MODEL = Path(__file__).parent / "assets" / "default"   # the embedded default (README: reproduce it)


def weights_digest(model: str | Path | None) -> str:
    """SHA-256 over the ``*.safetensors`` files of a model folder (None: the embedded default): part of every
    run's identity, so outputs of other (e.g. retrained) weights in the same folder are never reused."""
    import hashlib
    root = Path(model) if model else DEFAULT_MODEL
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.safetensors")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def pack_models(mmvdm: str | Path, vae: str | Path, out: str | Path, provenance: dict | None = None) -> Path:
    """Write a model folder ``out/mmvdm`` (bfloat16 storage: half the bytes) + ``out/vae`` (float32: the
    decoder's precision shows directly in the pixels) from trained weights folders, plus ``provenance.json``."""
    from morph4d.models import MMVDM, CausalVideoAutoencoder
    out = Path(out)
    MMVDM.from_pretrained(mmvdm).save_pretrained(out / "mmvdm", dtype=torch.bfloat16)
    CausalVideoAutoencoder.from_pretrained(vae).save_pretrained(out / "vae")
    if provenance is not None:
        write_json(out / "provenance.json", provenance)
    return out


def load_models(path: str | Path | None = None, cogvideox: str | None = None):
    """The MMVDM from ``path/mmvdm`` and the autoencoder from ``path/vae`` or, at paper scale, from the
    user's local CogVideoX-2B folder (``cogvideox``). ``path`` None: the embedded default."""
    from morph4d.models import MMVDM, CausalVideoAutoencoder, CogVideoXAutoencoder
    path = DEFAULT_MODEL if path is None else Path(path)
    if not (path / "mmvdm").is_dir():
        raise ValueError(f"{path} is not a model folder: expected {path / 'mmvdm'} (and {path / 'vae'} or "
                         f"--cogvideox); create one with `morph4d model init` or train one")
    model = MMVDM.from_pretrained(path / "mmvdm").eval()
    if cogvideox is not None:
        vae = CogVideoXAutoencoder.from_pretrained(cogvideox)
    elif (path / "vae").is_dir():
        vae = CausalVideoAutoencoder.from_pretrained(path / "vae").eval()
    else:
        raise ValueError(f"{path} has no vae/ folder; pass --cogvideox with a local CogVideoX-2B folder")
    return model, vae
