"""``morph4d generate``: one tracked reference image + an animation -> synchronized multi-view videos
(MVP4D §4), by running the sampling plan (``plan.py``) with the MMVDM, the video autoencoder and
multi-view classifier-free guidance.

Outputs in ``out``: ``plan.json`` + ``jobs/`` (resumable state), ``views/VIEW/FRAME.png`` and
``views/VIEW.mp4`` per view, ``grid.mp4`` (all views tiled), and ``manifest.json`` (cameras, per-frame
head parameters, seeds, versions) that the 4D fitting reads. Every file is written atomically.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from morph4d.cameras import VIEW_FOV, VIEW_RADIUS, Cameras, ViewSet, view_set
from morph4d.conditioning.maps import ConditioningConfig, HeadConditioner, fill_projection, layout_of
from morph4d.conditioning.projection import (
    PROJECTION_VERSION,
    project_with_confidence,
    projection_conditioning,
    projection_options,
)
from morph4d.diffusion.sampling import GUIDANCE_KINDS, angular_guidance_scales, ddim_sample, guidance
from morph4d.diffusion.schedule import Diffusion
from morph4d.errors import Morph4DError
from morph4d.generation.plan import PRESETS, Job, PlanConfig, PlanRun, build_plan, job_seed, plan_passes
from morph4d.generation.reference import (
    MAX_REFERENCE_RESOLUTION,
    RESOLUTION_MULTIPLE,
    Reference,
    canonicalize,
    load_reference,
    view_angles,
)
from morph4d.generation.videos import PARAM_KEYS, write_videos
from morph4d.heads import HeadModel, load_head_model
from morph4d.heads.animation import Animation, get_animation
from morph4d.models.folder import check_model_folder, load_models, read_mmvdm_config, weights_digest
from morph4d.models.latent import LATENT_CHANNELS, LATENT_FACTOR, check_frame_count, latent_frames


@dataclass(frozen=True)
class GenerateConfig:
    preset: str = "small"          # "120", "360" or "small" (PRESETS in plan.py)
    guidance: str = "multiview"    # "multiview", "cfg" or "none" (MVP4D Table 7)
    seed: int = 0
    radius: float = VIEW_RADIUS    # camera distance of the generated views (m)
    fov: float = VIEW_FOV          # their vertical field of view (deg)
    key_steps: int | None = None   # override the preset's DDIM steps
    other_steps: int | None = None
    anchor: bool = True            # ours (issue 17): sampling anchored to the reference projection (MultiViewGenerator)


COMPOSITE_SUPERSAMPLE = 2   # the projection blended into the decoded views (``composite``) is rendered at 2x
PROJECTION_WHITE = 0.999    # a projection pixel below this in some channel covers some geometry (its background is 1)
COMPOSITE_MATTE = 1         # px: and the written views are white farther than this from its geometry (1 chosen
#                             over 0, 2 and 3 on validation seeds 5000-5005: issue 17's note)
ANCHOR_POWER = 2   # the anchor's weight is the projection's confidence to this power (ours, issue 17): confident
#                    pixels (the reference saw them head-on) stay held, guesses (sheet 0.5, mirror fill 0.3, grazing
#                    surface) are held less. Validation seeds 5000-5005, generated (anchored) 20.89 dB at power 1,
#                    21.03 at 2, 20.98 at 3; the avatar on seeds 5000-5001 19.31 -> 19.51 (README "Quality report")


class MultiViewGenerator:
    """The job runner and overlap encoder of a plan: MMVDM + VAE + conditioning for one reference.

    ``anchor`` (ours, issue 17): every job's sampling is pulled towards the encoded reference projection (the
    reference's pixels on the tracked head mesh and its matte sheet, ``conditioning.projection``) weighted by
    its confidence squared (``ANCHOR_POWER``; ``ddim_sample``'s anchor): what the reference saw is kept, the network
    generates the rest (GEN3C's and ViewCrafter's premise, done at sampling time, so that it works with any MMVDM,
    MVP4D's layout included); and after decoding, the projection's pixels are blended into the views by their
    confidence (``composite``): the anchor in pixel space, where the latent one is blurred by the autoencoder. Off:
    MVP4D's sampler."""

    def __init__(self, model, vae, head: HeadModel, reference: Reference, animation: Animation,
                 cameras: Cameras, view_angles_deg: tuple[torch.Tensor, torch.Tensor], frames_per_window: int,
                 guidance_kind: str = "multiview", diffusion: Diffusion | None = None, anchor: bool = True):
        self.model, self.vae, self.head = model, vae, head
        self.anchor = anchor
        self.diffusion = Diffusion.for_model(model) if diffusion is None else diffusion
        # ours (issue 17): a model of the reference-projection layout gets the encoded projection of every job
        self.projection = bool(getattr(getattr(model, "config", None), "reference_projection", False))
        self.layout = layout_of(model.config, "the MMVDM") if self.projection else None
        self.cond = HeadConditioner(head, ConditioningConfig(reference_projection=self.projection))
        self.ref = canonicalize(reference, head)
        self.anim, self.cameras, self.F = animation, cameras, frames_per_window
        self.az, self.el = view_angles_deg
        self.ref_az, self.ref_el = view_angles(self.ref.camera)
        self.guidance_kind = guidance_kind
        H, W = cameras.height, cameras.width
        if (self.ref.camera.height, self.ref.camera.width) != (H, W):
            raise Morph4DError(f"the reference image is {self.ref.camera.width}x{self.ref.camera.height} but the "
                               f"views are {W}x{H}; crop/resize the reference to the model's resolution first")
        with torch.no_grad():
            self.ref_latent = vae.encode_image(self.ref.image[None])  # (1, 16, h, w)
            outcrop = None
            if self.ref.outcrop is not None:
                outcrop = torch.nn.functional.avg_pool2d(self.ref.outcrop[None, None], LATENT_FACTOR)[0, 0].round()
            self.ref_cond = self.cond.reference(self.ref.params, self.ref.camera, outcrop)[None]
            self.ref_verts = head(self.ref.params).reshape(-1, head.num_vertices, 3)[0]   # the projection's source

    def window_params(self, start: int, count: int | None = None):
        """The animation's head parameters of frames start .. start + count (a window's, by default)."""
        p = self.anim.params
        sl = slice(start, start + (self.F if count is None else count))
        return p.replace(**{k: getattr(p, k)[sl] for k in ("expression", "jaw", "neck", "eyes", "rotation",
                                                            "translation")})

    def __call__(self, job: Job, given: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                 callback=None) -> torch.Tensor:
        """Sample one job: latents ``(V_job, F_lat, 16, h, w)``."""
        cams = self.cameras[job.views]
        with torch.no_grad():
            cond = self.cond.video(self.window_params(job.start), cams, self.ref.camera, given=mask)[None]
            anchor = {}
            if self.projection or self.anchor:
                video, conf = projection_conditioning(self.ref_verts, self.head(self.window_params(job.start)),
                                                      self.head.faces, self.ref.camera, self.ref.image, cams,
                                                      **projection_options(self.head))
                projected = self.vae.encode(video[None])
                if self.projection:
                    cond = fill_projection(cond, self.layout, projected, conf[None])
                if self.anchor:
                    anchor = {"anchor": projected, "anchor_weight": conf[None] ** ANCHOR_POWER}
            # guidance scale per view from its angle to the nearest reference view (the reference image
            # and the views given whole), MVP4D §4
            ref_az = torch.tensor([self.ref_az] + [float(self.az[v]) for v in job.given_views])
            ref_el = torch.tensor([self.ref_el] + [float(self.el[v]) for v in job.given_views])
            scale = angular_guidance_scales(self.az[job.views], self.el[job.views], ref_az, ref_el)
            denoise = guidance(self.guidance_kind, self.model, self.diffusion, cond, self.ref_latent,
                               self.ref_cond, scale, given_mask=mask[None])
            noise = torch.randn(given[None].shape, generator=generator)
            out = ddim_sample(denoise, self.diffusion, noise, job.steps, given=given[None], given_mask=mask[None],
                              callback=callback, **anchor)
        return out[0]

    def encode_overlap(self, latents: torch.Tensor, overlap: int) -> torch.Tensor:
        """The last ``overlap`` frames of a decoded window, re-encoded as the next window's first latents."""
        with torch.no_grad():
            frames = self.vae.decode(latents[None, None])[0, 0]  # (F, 3, H, W)
            return self.vae.encode(frames[None, None, -overlap:])[0, 0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.decode(latents[None, None])[0, 0]  # (F, 3, H, W) in [0, 1]

    def composite(self, video: torch.Tensor, view: int) -> torch.Tensor:
        """The decoded ``video`` (T, 3, H, W) of view ``view`` with the reference projection (at
        ``COMPOSITE_SUPERSAMPLE`` x, the newest make) blended in by its confidence c: c * projection + (1 - c) *
        video (ours, issue 17; the anchor in pixel space), and white (the background) farther than
        ``COMPOSITE_MATTE`` pixels from anything the projection covers (head mesh, hair shell and curtain, matte
        sheet): the decoded views' faint blotches over the background go. On validation seeds 5000-5005 the blend
        took the generated views 21.60 -> 22.25 dB, every angle bin up (README "Quality report"); the weighting was
        chosen over the confidence's square, its square root and a hard paste (issue 17's note)."""
        with torch.no_grad():
            verts = self.head(self.window_params(0, len(video)))
            pixels, conf = project_with_confidence(torch.cat([self.ref_verts[None], verts]), self.head.faces,
                                                   self.ref.camera, self.ref.image, self.cameras[[view]],
                                                   COMPOSITE_SUPERSAMPLE, sheet=True, **projection_options(self.head))
            pixels, conf = pixels[0, 1:], conf[0, 1:]
            near = (pixels.min(1, keepdim=True).values < PROJECTION_WHITE).float()    # (T, 1, H, W): covered
            if COMPOSITE_MATTE:
                near = torch.nn.functional.max_pool2d(near, 2 * COMPOSITE_MATTE + 1, 1, COMPOSITE_MATTE)
        return near * (conf * pixels + (1 - conf) * video) + (1 - near)


@dataclass
class Generation:
    """A generation ready to run, every input checked (``prepare_generation``); the networks load on first use."""
    head: HeadModel
    reference: Reference
    animation: Animation
    config: GenerateConfig
    identity: dict                 # what makes an output folder this run's (another run's folder is refused)
    model_dir: str | None = None   # None: the embedded default
    cogvideox: str | None = None
    _models: tuple | None = field(default=None, repr=False)

    def models(self) -> tuple:
        """(MMVDM, video autoencoder), loaded once."""
        if self._models is None:
            self._models = load_models(self.model_dir, self.cogvideox)
        return self._models

    def run(self, out: str | Path, rank: int = 0, world: int = 1, barrier=lambda: None, log=print) -> dict:
        model, vae = self.models()
        return run_generate(out, model, vae, self.head, self.reference, self.animation, self.config,
                            self.identity, rank, world, barrier, log)


def prepare_generation(reference: str | Path, animation: str, cfg: GenerateConfig, head: str = "builtin",
                       flame_path: str | None = None, model: str | None = None,
                       cogvideox: str | None = None) -> Generation:
    """The one path from user inputs to a ``Generation`` (``morph4d generate`` and ``morph4d avatar``):
    the plan preset, head model, tracked reference and animation are loaded and checked against each other,
    and the run's identity is built (absolute paths + the weights' SHA-256), before anything is written."""
    if cfg.preset not in PRESETS:
        raise Morph4DError(f"unknown plan preset '{cfg.preset}'; expected one of {sorted(PRESETS)}")
    plan_config(cfg).check()   # step counts
    if cfg.guidance not in GUIDANCE_KINDS:
        raise Morph4DError(f"unknown guidance '{cfg.guidance}'; expected one of {list(GUIDANCE_KINDS)}")
    head_model = load_head_model(head, flame_path=flame_path)
    ref = load_reference(reference, head_model)
    H, W = ref.camera.height, ref.camera.width
    if H != W or W % RESOLUTION_MULTIPLE or not RESOLUTION_MULTIPLE <= W <= MAX_REFERENCE_RESOLUTION:
        raise Morph4DError(f"{reference}: the reference image is {W}x{H}; generation needs a square head crop whose "
                           f"side is a multiple of {RESOLUTION_MULTIPLE} up to {MAX_REFERENCE_RESOLUTION} px (the model's "
                           f"resolution: 64 for the embedded default, 512 at paper scale)")
    anim = get_animation(animation, head_model, PRESETS[cfg.preset].total_frames)
    anim.check_model(head_model)
    if model is not None:
        check_model_folder(model)
    identity = {"reference": os.path.abspath(reference), "animation": animation, "head": head_model.name,
                "model": os.path.abspath(model) if model else "embedded-default",
                "model_weights": weights_digest(model),
                "cogvideox": os.path.abspath(cogvideox) if cogvideox else None}
    return Generation(head_model, ref, anim, cfg, identity, model, cogvideox)


def plan_config(cfg: GenerateConfig) -> PlanConfig:
    """The sampling plan of a generation: its preset with the run's step counts and seed."""
    if cfg.preset not in PRESETS:
        raise Morph4DError(f"unknown preset '{cfg.preset}'; expected one of {sorted(PRESETS)}")
    overrides = {k: v for k, v in (("key_steps", cfg.key_steps), ("other_steps", cfg.other_steps),
                                   ("seed", cfg.seed)) if v is not None}
    return replace(PRESETS[cfg.preset], **overrides)


def plan_cost(generation: Generation) -> dict:
    """What a generation will cost, without running it: jobs, DDIM steps, network passes (``plan_passes``),
    tokens per pass and an estimate of the MMVDM's floating-point operations (2 x multiply-adds of the
    transformer blocks' projections, 12 D^2 per token and layer, plus attention's 4 N D per token and layer;
    embedding and output layers left out), from the model folder's config.json alone."""
    pcfg = plan_config(generation.config)
    vs = view_set(pcfg.views)
    jobs = build_plan(pcfg, vs)
    mcfg = read_mmvdm_config(generation.model_dir)
    h = generation.reference.camera.width // LATENT_FACTOR
    F = latent_frames(pcfg.frames_per_window)
    L, D = mcfg.num_layers, mcfg.inner_dim

    def flop(n_tokens: int) -> float:
        return 2.0 * L * n_tokens * (12 * D * D + 2 * n_tokens * D)

    total, joint_tokens = 0.0, []
    passes = plan_passes(jobs, generation.config.guidance)
    single_tokens = mcfg.num_tokens(1, F, h, h)
    for job in jobs:
        n = mcfg.num_tokens(len(job.views), F, h, h)
        joint_tokens.append(n)
        per_step = flop(n) * (2 if generation.config.guidance == "cfg" else 1)
        if generation.config.guidance == "multiview":
            per_step += len(job.generated_views) * flop(single_tokens)
        total += job.steps * per_step
    return {**passes, "tokens_joint_max": max(joint_tokens), "tokens_single": single_tokens,
            "flop": total, "layers": L, "width": D, "resolution": generation.reference.camera.width,
            "frames_per_window": pcfg.frames_per_window, "views": len(vs.azimuth)}


def run_generate(out: str | Path, model, vae, head: HeadModel, reference: Reference, animation: Animation,
                 cfg: GenerateConfig, identity: dict, rank: int = 0, world: int = 1, barrier=lambda: None,
                 log=print) -> dict:
    """Plan, sample (resumably, split over ``world`` processes), decode and write the outputs."""
    pcfg = plan_config(cfg)
    if animation.num_frames < pcfg.total_frames:
        raise Morph4DError(f"the '{cfg.preset}' preset generates {pcfg.total_frames} frames but the animation "
                           f"'{animation.name}' has {animation.num_frames}; give a longer animation (--frames)")
    check_frame_count(pcfg.frames_per_window)
    vs = view_set(pcfg.views)
    res = reference.camera.width
    cameras = vs.cameras(cfg.radius, cfg.fov, res, res)
    gen = MultiViewGenerator(model, vae, head, reference, animation, cameras, (vs.azimuth, vs.elevation),
                             pcfg.frames_per_window, cfg.guidance, anchor=cfg.anchor)
    run = PlanRun(out, pcfg, {**identity, "guidance": cfg.guidance, "radius": cfg.radius, "fov": cfg.fov,
                              "anchor": cfg.anchor, "anchor_power": ANCHOR_POWER if cfg.anchor else None,
                              "projection": PROJECTION_VERSION}, vs)
    latent_shape = (latent_frames(pcfg.frames_per_window), LATENT_CHANNELS, res // LATENT_FACTOR, res // LATENT_FACTOR)
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


def write_outputs(out: Path, run: PlanRun, gen: MultiViewGenerator, vs: ViewSet, cameras: Cameras,
                  animation: Animation, pcfg: PlanConfig, log) -> dict:
    """Decode every view and write the generated-videos folder (``videos.write_videos``)."""
    V, T = len(vs.azimuth), pcfg.total_frames
    videos = [run.frames_of(gen.decode, v).clamp(0, 1) for v in range(V)]                      # (T, 3, H, W) each
    if gen.anchor:
        videos = [gen.composite(x, v) for v, x in enumerate(videos)]
    videos = [x.permute(0, 2, 3, 1) for x in videos]                                            # (T, H, W, 3)
    p = animation.params
    params = p.replace(shape=gen.ref.params.shape, **{k: getattr(p, k)[:T] for k in PARAM_KEYS if k != "shape"})
    paths = write_videos(out, videos, cameras, vs.azimuth, vs.elevation, vs.key, params, gen.head.name,
                         animation.fps, {"seeds": {j.id: job_seed(pcfg.seed, j.id) for j in run.jobs},
                                         "plan": asdict(pcfg)}, reference=gen.ref)
    log(f"wrote {V} views x {T} frames to {out / 'views'}, {paths['grid']} and {paths['manifest']}")
    return paths
