"""MVP4D's multi-view video sampling plan (§4, Fig. S10-S11) as a resumable, distributable job graph.

1. key videos: the key views, frames [0, F), generation mode 1 (reference image only);
2. clusters: each group of 4 neighbouring non-key views with its 4 nearest key videos given (mode 2);
3. temporal extension of the key videos: a window of F frames starting ``F - overlap`` frames later,
   its first ``overlap`` frames (3 latent frames for overlap 9) given from the previous window (mode 3);
4. extension of each cluster: its 4 keys' extended videos given, and its own first latent frames (mode 4).
Steps 3-4 repeat until ``total_frames`` are covered (49 + 40 = 89 in the paper). Every job of the key views
(1 and 3) runs ``key_steps`` DDIM steps, the others ``other_steps`` (MVP4D S3: 100 for the key views, 50 for
all other views).

Jobs and their dependencies are written to ``plan.json``; each finished job stores its latents in
``jobs/JOB.safetensors`` atomically. A job reads what it is given from its dependencies' files, never
from memory, and draws its noise from a generator seeded by (seed, job id), so a killed run that is
started again skips finished jobs and produces bit-identical results, and N processes (torchrun /
accelerate launch, gloo or nccl) that split the jobs of each dependency level produce the same files.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from morph4d.cameras import ViewSet, view_set
from morph4d.errors import Morph4DError
from morph4d.io import atomic_path, write_json
from morph4d.models.latent import TEMPORAL_FACTOR, check_frame_count
from morph4d.validate import read_json

PLAN_VERSION = 2  # 2: the key views' extension windows run key_steps (MVP4D S3), not other_steps


@dataclass(frozen=True)
class PlanConfig:
    views: str = "120"            # view set: "120", "360" or "small"
    frames_per_window: int = 49   # F of one pass (1 + 4k)
    overlap: int = 9              # frames shared by consecutive windows (1 + 4j; 9 -> 3 latent frames)
    total_frames: int = 89
    key_steps: int = 100          # DDIM steps for key views ...
    other_steps: int = 50         # ... and for everything else (MVP4D §4)
    seed: int = 0

    def check(self) -> None:
        check_frame_count(self.frames_per_window)
        check_frame_count(self.overlap)
        F, O, T = self.frames_per_window, self.overlap, self.total_frames
        if not 1 <= O < F and F > 1:
            raise Morph4DError(f"overlap must be in [1, frames_per_window), got overlap {O} with {F} frames")
        if T < F or (T - F) % (F - O):
            raise Morph4DError(f"total_frames {T} cannot be planned: it must be {F} + n * {F - O} "
                               f"(windows of {F} frames advancing by {F - O})")
        if min(self.key_steps, self.other_steps) < 1:
            raise Morph4DError("key_steps and other_steps must be >= 1")


PRESETS = {
    "120": PlanConfig(views="120"),
    "360": PlanConfig(views="360"),
    "small": PlanConfig(views="small", frames_per_window=17, overlap=9, total_frames=25, key_steps=20,
                        other_steps=10),
}


@dataclass
class Job:
    """One joint pass of the MMVDM over ``views`` x frames [start, start + F)."""
    id: str
    views: list[int]              # indices into the view set, in the order of the pass
    start: int                    # first frame of the window
    mode: int                     # MVP4D generation mode 1-4
    steps: int
    given_views: list[int] = field(default_factory=list)     # views copied whole from deps (mode 2/4)
    given_frames: int = 0                                     # leading latent frames given (mode 3/4)
    deps: list[str] = field(default_factory=list)
    level: int = 0                                            # jobs of one level are independent

    @property
    def generated_views(self) -> list[int]:
        return [v for v in self.views if v not in self.given_views]


def build_plan(cfg: PlanConfig, vs: ViewSet | None = None) -> list[Job]:
    """The jobs of MVP4D's sampling plan for ``cfg`` (see module docstring), in dependency order."""
    cfg.check()
    vs = view_set(cfg.views) if vs is None else vs
    keys = torch.nonzero(vs.key)[:, 0].tolist()
    F, O = cfg.frames_per_window, cfg.overlap
    windows = 1 + (cfg.total_frames - F) // (F - O)
    given_lat = (O - 1) // TEMPORAL_FACTOR + 1
    jobs = [Job("key_w0", keys, 0, 1, cfg.key_steps, level=0)]
    for c, (members, ckeys) in enumerate(zip(vs.clusters, vs.cluster_keys)):
        jobs.append(Job(f"cluster{c}_w0", members + ckeys, 0, 2, cfg.other_steps, given_views=ckeys,
                        deps=["key_w0"], level=1))
    for w in range(1, windows):
        start = w * (F - O)
        jobs.append(Job(f"key_w{w}", keys, start, 3, cfg.key_steps, given_frames=given_lat,
                        deps=[f"key_w{w - 1}"], level=2 * w))
        for c, (members, ckeys) in enumerate(zip(vs.clusters, vs.cluster_keys)):
            jobs.append(Job(f"cluster{c}_w{w}", members + ckeys, start, 4, cfg.other_steps, given_views=ckeys,
                            given_frames=given_lat, deps=[f"key_w{w}", f"cluster{c}_w{w - 1}"], level=2 * w + 1))
    return jobs


def plan_passes(jobs: list[Job], guidance: str) -> dict:
    """Network passes of a plan under a guidance kind (``diffusion.sampling.GUIDANCE_KINDS``): per DDIM step a
    job runs one joint conditional pass over its views, plus, for ``cfg``, one joint unconditional pass, or,
    for ``multiview``, one single-view unconditional pass per view it generates (views given whole need
    none, MVP4D §4). Returns totals: ``steps``, ``joint`` (joint passes), ``single`` (single-view passes)."""
    steps = sum(j.steps for j in jobs)
    single = sum(j.steps * len(j.generated_views) for j in jobs) if guidance == "multiview" else 0
    return {"jobs": len(jobs), "steps": steps, "joint": steps * (2 if guidance == "cfg" else 1), "single": single}


def job_seed(seed: int, job_id: str) -> int:
    """A generator seed per job that does not depend on which process runs it or when."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{job_id}".encode()).digest()[:8], "little") % (2 ** 63)


# A job runner: (job, given latents by view (V_job, F_lat, C, h, w) with a mask (V_job, F_lat), generator)
# -> latents of all the job's views (V_job, F_lat, C, h, w). It also needs the decoded-and-re-encoded
# overlap of a previous window, supplied by ``overlap_latents``.
JobRunner = Callable[[Job, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
OverlapEncoder = Callable[[torch.Tensor, int], torch.Tensor]


class PlanRun:
    """A plan on disk in ``root``: ``plan.json`` + ``jobs/*.safetensors``; see module docstring."""

    def __init__(self, root: str | Path, cfg: PlanConfig, identity: dict, vs: ViewSet | None = None):
        """``identity``: what makes two runs the same run (reference, animation, model, seed, ...); an
        existing folder holding a different run's state is refused, nothing is overwritten. ``vs``: the
        plan's view set when the caller has built it already (default: ``view_set(cfg.views)``)."""
        self.root, self.cfg = Path(root), cfg
        self.jobs = build_plan(cfg, vs)
        self.by_id = {j.id: j for j in self.jobs}
        state = {"version": PLAN_VERSION, "config": asdict(cfg), "identity": identity,
                 "jobs": [asdict(j) for j in self.jobs]}
        plan_file = self.root / "plan.json"
        if plan_file.exists():
            old = read_json(plan_file)
            if {k: old.get(k) for k in ("version", "config", "identity")} != \
                    {k: state[k] for k in ("version", "config", "identity")}:
                raise Morph4DError(f"{self.root} holds the state of a different run (plan.json differs in its "
                                   f"configuration or inputs); use another --out folder or delete it")
        else:
            write_json(plan_file, state)

    def path(self, job_id: str) -> Path:
        return self.root / "jobs" / f"{job_id}.safetensors"

    def done(self, job_id: str) -> bool:
        return self.path(job_id).exists()

    def load(self, job_id: str) -> torch.Tensor:
        return load_file(str(self.path(job_id)))["latents"]

    def _save(self, job_id: str, latents: torch.Tensor) -> None:
        with atomic_path(self.path(job_id)) as tmp:
            save_file({"latents": latents.contiguous()}, str(tmp))

    def given(self, job: Job, latent_shape: tuple, encode_overlap: OverlapEncoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Given latents ``(V_job, F_lat, C, h, w)`` and mask ``(V_job, F_lat)`` of ``job``, from its deps."""
        V = len(job.views)
        lat = torch.zeros(V, *latent_shape)
        mask = torch.zeros(V, latent_shape[0], dtype=torch.bool)
        for dep_id in job.deps:
            dep = self.by_id[dep_id]
            dep_lat = self.load(dep_id)
            for k, v in enumerate(job.views):
                if v not in dep.views:
                    continue
                src = dep_lat[dep.views.index(v)]
                if v in job.given_views:
                    if dep.start == job.start:  # a whole key video of the same window (modes 2, 4)
                        lat[k], mask[k] = src, True
                elif job.given_frames and dep.start < job.start:  # the previous window's last frames
                    lat[k, : job.given_frames] = encode_overlap(src, self.cfg.overlap)[: job.given_frames]
                    mask[k, : job.given_frames] = True
        return lat, mask

    def run(self, runner: JobRunner, encode_overlap: OverlapEncoder, latent_shape: tuple,
            rank: int = 0, world: int = 1, barrier: Callable[[], None] = lambda: None,
            progress: Callable[[str, int, int], None] = lambda job, i, n: None) -> None:
        """Run every unfinished job; process ``rank`` of ``world`` takes every world-th job of each level."""
        levels = sorted({j.level for j in self.jobs})
        finished = 0
        for level in levels:
            todo = [j for j in self.jobs if j.level == level]
            for i, job in enumerate(todo):
                if i % world != rank or self.done(job.id):
                    continue
                lat, mask = self.given(job, latent_shape, encode_overlap)
                g = torch.Generator().manual_seed(job_seed(self.cfg.seed, job.id))
                out = runner(job, lat, mask, g)
                self._save(job.id, torch.where(mask[..., None, None, None], lat, out))
                finished += 1
                progress(job.id, finished, len(self.jobs))
            barrier()  # the next level reads this level's files

    def frames_of(self, decode: Callable[[torch.Tensor], torch.Tensor], view: int) -> torch.Tensor:
        """All frames ``(T, ...)`` of one view, stitched from its windows (each adds F - overlap frames)."""
        windows = sorted((j for j in self.jobs if view in j.views and view not in j.given_views),
                         key=lambda j: j.start)
        pieces = []
        for w, job in enumerate(windows):
            frames = decode(self.load(job.id)[job.views.index(view)])
            pieces.append(frames if w == 0 else frames[self.cfg.overlap:])
        return torch.cat(pieces)
