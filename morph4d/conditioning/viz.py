"""``morph4d conditioning``: PNG grids of every conditioning channel (like MVP4D Fig. S9), for checking by eye.

Writes into ``out``:
- ``overview.png``: one row per image (the reference, then a few views x kept frames); columns: a shaded
  render of the head, the pose map (lowest-frequency sin channels as RGB), the expression map (x4), ray
  directions, camera origins, the reference mask, the outcropping mask and the 3 motion maps
  (u, v as red, green). Signed maps are shown as 0.5 + 0.5 * value.
- ``channels.png``: every channel of the same images as a grey tile (signed channels as 0.5 + 0.5 v),
  columns in layout order; ``channels.txt`` names each column.
- ``config.json``: the resolved configuration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from morph4d.cameras import VIEW_FOV, VIEW_RADIUS, head_crop_boxes, orbit_cameras, outcrop_mask, view_set
from morph4d.conditioning.maps import ConditioningConfig, HeadConditioner, fill_projection
from morph4d.conditioning.projection import projection_conditioning, projection_options
from morph4d.errors import Morph4DError
from morph4d.heads import load_head_model
from morph4d.heads.animation import get_animation
from morph4d.io import atomic_path, write_json
from morph4d.mesh.shade import preview_colors, shade_mesh
from morph4d.models.latent import LATENT_FACTOR, kept_frames
from morph4d.video import grid, write_png

EXPRESSION_GAIN = 4.0  # the overview shows 4x the expression map: typical offsets are a few mm (0.2-0.5)


@dataclass(frozen=True)
class VizConfig:
    out: str = "out/conditioning"
    animation: str = "talk"
    views: str = "120"
    frames: int = 49
    resolution: int = 512
    head: str = "builtin"
    flame_path: str | None = None
    radius: float = VIEW_RADIUS
    fov: float = VIEW_FOV
    num_views: int = 3        # views shown: spread over the set's key views
    num_frames: int = 3       # kept frames shown: first, middle, last
    tile: int = 96            # pixels per tile in the sheets
    reference_projection: bool = False  # ours (issue 17): the projection group too, encoded by ``model``'s autoencoder
    model: str | None = None  # model folder whose autoencoder encodes the projection (None: the embedded default)


def _signed(x: torch.Tensor) -> torch.Tensor:
    return (0.5 + 0.5 * x).clamp(0, 1)


def _tiles(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, size, size, C) with nearest upsampling (latent pixels stay visible)."""
    return F.interpolate(maps, size=(size, size), mode="nearest").permute(0, 2, 3, 1)


def run_viz(cfg: VizConfig, log=print) -> dict:
    if cfg.resolution % LATENT_FACTOR:
        raise Morph4DError(f"--res must be divisible by {LATENT_FACTOR}, got {cfg.resolution}")
    model = load_head_model(cfg.head, flame_path=cfg.flame_path)
    anim = get_animation(cfg.animation, model, cfg.frames)
    anim.check_model(model)
    keep = kept_frames(anim.num_frames)
    vs = view_set(cfg.views)
    cond = HeadConditioner(model, ConditioningConfig(reference_projection=cfg.reference_projection))
    layout, res = cond.layout, cfg.resolution
    # 1. the reference: a close-up "photo" whose 25%-enlarged head crop reaches past the photo's border,
    #    so the outcropping mask has something to show (MVP4D S2.1)
    params0 = model.zero_params()
    photo = orbit_cameras(torch.tensor([10.0]), torch.tensor([5.0]), 0.62, cfg.fov, res, res,
                          target=(0.0, 0.0, 0.0))  # the neck runs out of the bottom of the photo
    posed0 = model(params0)
    box = head_crop_boxes(photo.project(posed0)[:, :, :2], scale=1.25)
    ref_cam = photo.cropped(box, res)
    lat = res // LATENT_FACTOR
    ref = cond.reference(params0, ref_cam, outcrop_mask(box, res, res, lat)[0])
    # 2. a few views (spread over the key views) x a few kept frames
    keys = torch.nonzero(vs.key)[:, 0]
    pick_views = keys[torch.argsort(vs.azimuth[keys])][torch.linspace(0, len(keys) - 1, cfg.num_views).round().long()]
    cams = vs.cameras(cfg.radius, cfg.fov, res, res)[pick_views]
    video = cond.video(anim.params, cams, ref_cam)  # (V, K, C, h, w)
    colors = preview_colors(model)
    projected = None
    if cfg.reference_projection:   # the reference photo's pixels through the head mesh, encoded (ours, issue 17)
        from morph4d.models.folder import load_models
        vae = load_models(cfg.model)[1]
        photo_image = shade_mesh(posed0, model.faces, colors, ref_cam)[0][0].permute(2, 0, 1)
        with torch.no_grad():
            pixels, conf = projection_conditioning(posed0.reshape(-1, 3), model(anim.params), model.faces, ref_cam,
                                                   photo_image, cams, **projection_options(model))
            video = fill_projection(video, layout, vae.encode(pixels[None])[0].float(), conf)
        projected = pixels[:, keep]                                                      # (V, K, 3, H, W)
    pick_frames = torch.linspace(0, len(keep) - 1, cfg.num_frames).round().long()
    maps = torch.cat([ref[None], video[:, pick_frames].flatten(0, 1)])  # (1 + V*Fs, C, h, w)
    # shaded renders of the same images, for comparing the maps with the picture
    verts = model(anim.params)
    rows_cam = [ref_cam] + [cams[[v]] for v in range(len(cams)) for _ in pick_frames]
    rows_verts = [posed0] + [verts[keep[int(k)]] for _ in range(len(cams)) for k in pick_frames]
    renders = torch.cat([shade_mesh(v, model.faces, colors, c.resized(cfg.tile, cfg.tile))[0]
                         for v, c in zip(rows_verts, rows_cam)])
    g = layout.groups()
    t = cfg.tile
    overview = [renders, _tiles(_signed(maps[:, g["pose"].start: g["pose"].start + 3]), t),
                _tiles(_signed(EXPRESSION_GAIN * maps[:, g["expression"]]), t),
                _tiles(_signed(maps[:, g["ray_direction"]]), t),
                _tiles(_signed(maps[:, g["ray_origin"]]), t),
                _tiles(maps[:, g["reference_mask"]].expand(-1, 3, -1, -1), t),
                _tiles(maps[:, g["outcrop_mask"]].expand(-1, 3, -1, -1), t)]
    for j in range(3):
        m = maps[:, g["motion"].start + 2 * j: g["motion"].start + 2 * j + 2]
        overview.append(_tiles(_signed(torch.cat([m, torch.zeros_like(m[:, :1])], 1)), t))
    columns = ["render", "pose (sin 2^0 pi x,y,z)", f"expression x{EXPRESSION_GAIN:g}", "ray direction", "ray origin",
               "reference mask", "outcrop mask", "motion 1", "motion 2", "motion 3"]
    if projected is not None:      # the reference row has no projection: white
        shown_px = torch.cat([torch.ones_like(projected[:1, 0]), projected[:, pick_frames].flatten(0, 1)])
        overview += [_tiles(shown_px, t), _tiles(maps[:, g["projection"].stop - 1:g["projection"].stop]
                                                 .expand(-1, 3, -1, -1), t)]
        columns += ["reference projection (pixels, before encoding)", "projection confidence"]
    overview = torch.stack(overview, 1).flatten(0, 1)  # (rows * cols, t, t, 3)
    out = Path(cfg.out)
    paths = {"overview": out / "overview.png", "channels": out / "channels.png",
             "channel_names": out / "channels.txt", "config": out / "config.json"}
    write_png(paths["overview"], grid(overview, cols=len(columns)))
    small = max(24, t // 2)
    signed = torch.ones(layout.num_channels, dtype=torch.bool)
    signed[g["reference_mask"]] = signed[g["outcrop_mask"]] = False
    if "projection" in g:
        signed[g["projection"].stop - 1] = False                                        # the confidence
    shown = torch.where(signed.view(1, -1, 1, 1), _signed(maps), maps.clamp(0, 1))
    chans = _tiles(shown.flatten(0, 1)[:, None], small).expand(-1, -1, -1, 3)
    write_png(paths["channels"], grid(chans, cols=layout.num_channels, pad=2))
    names = layout.channel_names()
    with atomic_path(paths["channel_names"]) as tmp:
        tmp.write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)))
    rows = ["reference"] + [f"view {int(v)} (az {vs.azimuth[v]:.0f}, el {vs.elevation[v]:.0f}) frame {keep[int(k)]}"
                            for v in pick_views for k in pick_frames]
    write_json(paths["config"], {"viz": asdict(cfg), "conditioning": asdict(cond.cfg), "rows": rows,
                                 "overview_columns": columns})
    for p in paths.values():
        log(f"wrote {p}")
    return {k: str(p) for k, p in paths.items()}
