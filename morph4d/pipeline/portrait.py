"""``morph4d portrait``: IM-Portrait end to end (IM-Portrait §3.4; issue 18 §5): a portrait (a photo, tracked first
into ``track/``, or a tracked reference .npz) and a driving animation (built-in, a file, or a driving video tracked
into ``drive/``) -> a talking-head video as MPIs -> the frontal video, +-``side_deg`` side views, a stereo pair
(side by side) and the depth video, as MP4s.

* The **frontal camera** is the reference's (tracked) camera, optionally orbited about the head joint by
  ``--yaw`` / ``--pitch`` degrees (the supplement's second way to move the camera: the UV maps are rasterized
  into the chosen frontal camera); the MPIs live in it.
* The head: the reference's identity (shape) with the animation's expression, jaw, eyes and motion, the
  reference's global pose folded into the camera first (``generation.reference.canonicalize``, as MVP4D's
  generation does).
* **Clips** of ``clip`` frames are sampled one after another (``portrait.sample``): the first clip without a
  first frame, every later one with the previous clip's last frontal frame in its first-frame slot (the
  supplement's long-video chaining). Each clip's network outputs are written atomically to
  ``clips/NNN.safetensors``; a killed run resumes after its last finished clip, and a run folder made with
  other inputs or weights is refused (``run.json``).
* **Background**: a photo's own backdrop, static: ``track/background.png`` (the crop with the person inpainted
  away, ``tracking.portrait.background_plate``) is one more opaque plane behind the MPI (``mpi.with_background``),
  so the frontal video shows it exactly and side views with a wall's parallax. A tracked ``--reference`` .npz
  (matted, no backdrop) and ``--white-background`` give white, the training data's background.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from morph4d.cameras import Cameras
from morph4d.conditioning.uvmaps import UVConditioner
from morph4d.data.format import PARAM_FIELDS, select_frames
from morph4d.diffusion.schedule import Diffusion, DiffusionConfig
from morph4d.errors import Morph4DError
from morph4d.generation.reference import canonicalize, load_reference
from morph4d.heads import load_head_model
from morph4d.heads.animation import get_animation
from morph4d.io import atomic_path, input_key, write_json
from morph4d.models.folder import DEFAULT_PORTRAIT, weights_digest
from morph4d.models.portrait_unet import PortraitUNet
from morph4d.portrait.mpi import head_distance, orbit_about, plane_depths, render_mpi, stereo_cameras, with_background
from morph4d.portrait.objective import frame_conditions, frame_mpi
from morph4d.portrait.sample import sample_video
from morph4d.video import grid, read_png, write_mp4, write_png

RUN_VERSION = 2   # of run.json; 2: input files identified by content (io.input_key), not by path


@dataclass(frozen=True)
class PortraitConfig:
    reference: str
    out: str
    model: str | None = None      # None: the embedded default (models.folder.DEFAULT_PORTRAIT)
    animation: str = "talk"
    frames: int = 32              # frames of a built-in animation (a file keeps its own)
    clip: int = 16                # frames per clip (the paper: 32)
    steps: int = 20               # DDIM steps per clip
    side_deg: float = 5.0         # side views at +- this many degrees (the paper's)
    baseline: float = 0.064       # stereo baseline (m)
    yaw: float = 0.0              # frontal camera orbited about the head joint (degrees)
    pitch: float = 0.0
    seed: int = 0
    head: str = "builtin"         # the head model the reference was tracked with
    flame_path: str | None = None
    drive: str | None = None      # a driving video: tracked (morph4d track), its performance replaces --animation
    embedding: str | None = None  # landmark embedding for tracking (FLAME needs one)
    white_background: bool = False  # a photo's inpainted backdrop (module doc) replaced by white

    def check(self) -> None:
        if self.clip < 1 or self.steps < 1 or self.frames < 1:
            raise Morph4DError(f"--clip, --steps and --frames must be >= 1, got {self.clip}, {self.steps}, "
                               f"{self.frames}")
        if not 0 < self.side_deg <= 30 or not 0 < self.baseline <= 0.3:
            raise Morph4DError(f"--side-deg must be in (0, 30] and --baseline in (0, 0.3] m, got {self.side_deg}, "
                               f"{self.baseline}")


def run_portrait(cfg: PortraitConfig, log=print) -> dict:
    """The whole command (module doc); returns the output paths. Inputs are read and checked first."""
    from safetensors.torch import load_file, save_file
    cfg.check()
    model_dir = Path(cfg.model) if cfg.model is not None else DEFAULT_PORTRAIT
    if cfg.model is None and not (model_dir / "config.json").is_file():
        raise Morph4DError(f"no IM-Portrait weights at {model_dir}: the embedded default is missing from this "
                           f"install; pass --model RUN/unet of `morph4d train-mpi` (scripts/train_portrait_default.sh "
                           f"trains it there)")
    if not (model_dir / "config.json").is_file():
        raise Morph4DError(f"{model_dir} is not an IM-Portrait weights folder (no config.json); expected RUN/unet of "
                           f"`morph4d train-mpi` or a folder written by `morph4d model pack-portrait`")
    net = PortraitUNet.from_pretrained(model_dir).eval()
    S = net.config.sample_size
    head = load_head_model(cfg.head, flame_path=cfg.flame_path)
    out = Path(cfg.out)
    reference_path, animation = cfg.reference, cfg.animation
    from morph4d.tracking.run import TrackConfig, is_video, run_track
    if cfg.drive is not None and not is_video(cfg.drive):
        raise Morph4DError(f"--drive {cfg.drive}: expected a video file (MP4, MOV, MKV, WebM, AVI, ...)")
    if not Path(cfg.reference).is_file():
        raise Morph4DError(f"{cfg.reference} does not exist; expected a portrait photo or a tracked reference .npz")
    # input files and the weights by content, not by path: a moved run folder or input is the same run
    config = {k: input_key(v) for k, v in asdict(cfg).items() if k not in ("out", "model")}
    identity = {"config": config, "weights": weights_digest(model_dir), "run_version": RUN_VERSION}
    run_file = out / "run.json"
    if run_file.is_file() and json.loads(run_file.read_text()) != json.loads(json.dumps(identity)):
        raise Morph4DError(f"{out} holds a portrait run of other inputs or weights; use a new --out folder")
    if Path(cfg.reference).suffix.lower() != ".npz":            # a photo: tracked at the model's resolution first
        reference_path = str(out / "track" / "reference.npz")
        if not Path(reference_path).is_file():
            run_track(TrackConfig(cfg.reference, str(out / "track"), S, cfg.head, cfg.flame_path, cfg.embedding),
                      log=log)
    if cfg.drive is not None:
        animation = str(out / "drive" / "animation.npz")
        if not Path(animation).is_file():
            run_track(TrackConfig(cfg.drive, str(out / "drive"), S, cfg.head, cfg.flame_path, cfg.embedding),
                      log=log)
    ref = canonicalize(load_reference(reference_path, head), head)
    if ref.image.shape[-2:] != (S, S):
        raise Morph4DError(f"the reference is {ref.image.shape[-1]}x{ref.image.shape[-2]} px but the model "
                           f"{model_dir} takes {S}x{S}: give the photo itself (tracked at {S} px), or re-track it with "
                           f"`morph4d track PHOTO --res {S}`")
    anim = get_animation(animation, head, cfg.frames)
    params = anim.params.replace(shape=ref.params.shape.clone())
    F = params.jaw.shape[0]
    with torch.no_grad():
        joint = head.joints(select_frames(params, [0])).reshape(-1, 3)[0]
    camera = orbit_about(ref.camera, joint, cfg.yaw, cfg.pitch) if (cfg.yaw or cfg.pitch) else ref.camera
    uv = UVConditioner(head)
    with torch.no_grad():
        maps, _ = frame_conditions(uv, head(params), camera, head(_one_frame(ref.params))[0], ref.camera,
                                   ref.image, net.config.projection)                 # (F, 3 [+ 4], S, S)
        reference = torch.cat([ref.image * 2 - 1, uv.maps(_one_frame(ref.params), ref.camera)[0]])
    depths = plane_depths(head_distance(camera, joint), net.config.planes).float()
    plate = out / "track" / "background.png"
    plate = read_png(plate).permute(2, 0, 1) if plate.is_file() and not cfg.white_background else None
    if plate is not None and tuple(plate.shape[-2:]) != (S, S):
        raise Morph4DError(f"{out / 'track' / 'background.png'} is not {S}x{S} px; remove {out / 'track'} to re-track")
    write_json(run_file, identity)
    clips = out / "clips"

    def load(c):
        return load_file(clips / f"{c:03d}.safetensors") if (clips / f"{c:03d}.safetensors").is_file() else None

    def save(c, clip):
        clips.mkdir(parents=True, exist_ok=True)
        with atomic_path(clips / f"{c:03d}.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in clip.items()}, str(tmp))
        log(f"[portrait] clip {c + 1}/{-(-F // cfg.clip)}")
    outputs = sample_video(net, Diffusion(DiffusionConfig(snr_shift_scale=1.0)), maps, reference, depths, camera,
                           cfg.clip, cfg.steps, cfg.seed, load=load, save=save)
    return _write_videos(out, outputs, depths, camera, joint, cfg, anim.fps, plate)


def _write_videos(out: Path, outputs: list[dict], depths, camera: Cameras, joint, cfg: PortraitConfig,
                  fps: float, plate: torch.Tensor | None) -> dict:
    sides = Cameras.cat([orbit_about(camera, joint, -cfg.side_deg), orbit_about(camera, joint, cfg.side_deg)])
    pair = stereo_cameras(camera, cfg.baseline)
    frontal, left, right, sbs, depth = [], [], [], [], []
    near, far = float(depths[0]), float(depths[-1])
    for clip in outputs:
        for f in range(clip["alpha"].shape[0]):
            head_only = frame_mpi({k: v[None] for k, v in clip.items()}, 0, f, depths, camera)
            # frontal: the plate is the background image itself (its plane maps onto the frontal camera 1:1); alpha
            # and depth stay the head's; side views see the plate as a plane behind the head
            fr = render_mpi(head_only, camera, background=plate if plate is not None else 1.0)
            mpi = with_background(head_only, plate) if plate is not None else head_only
            sd = render_mpi(mpi, sides).rgb
            st = render_mpi(mpi, pair).rgb
            frontal.append(fr.rgb[0])
            left.append(sd[0])
            right.append(sd[1])
            sbs.append(torch.cat([st[0], st[1]], -1))
            d = torch.where(fr.alpha[0] > 0.5, (far - fr.depth[0]) / (far - near), torch.zeros_like(fr.depth[0]))
            depth.append(d.clamp(0, 1).expand(3, -1, -1))
    paths = {}
    for name, frames in (("frontal", frontal), ("side_left", left), ("side_right", right), ("stereo_sbs", sbs),
                         ("depth", depth)):
        paths[name] = out / f"{name}.mp4"
        write_mp4(paths[name], torch.stack(frames).clamp(0, 1).permute(0, 2, 3, 1), fps=fps)
    mid = len(frontal) // 2
    sheet = torch.stack([left[mid], frontal[mid], right[mid], depth[mid]])
    paths["sheet"] = out / "sheet.png"
    write_png(paths["sheet"], grid(sheet.permute(0, 2, 3, 1), cols=4, pad=2))
    return paths


def _one_frame(params):
    """A one-frame ``HeadParams`` (no frame axis, as a Reference holds) with a frame axis of 1 (shape kept)."""
    return params.replace(**{k: getattr(params, k)[None] for k in PARAM_FIELDS if k != "shape"})


__all__ = ["PortraitConfig", "run_portrait"]
