"""The reference portrait projected through a head mesh into other cameras and frames: the reference
projection (a texture copied from one photo onto a moving surface).

Used by the evaluation's reference-projection baseline (``eval.baselines``, ``eval.synthetic``) and by
IM-Portrait's training, where it is the pseudo ground truth of L_side (``portrait.train``): the reference view
with the target expression, blurry where the mesh is coarse, which the paper only uses at large noise levels.
Surface points the reference camera does not see (a depth test against the reference's own render) get the mean
colour of those it sees; the background is white.

**Matte sheet** (ours, issue 17; ``sheet=True``): the head mesh has no hair, so on its own the projection leaves
the hair out (a bald head in the mean colour). With the sheet, every foreground pixel of the reference (its
matte: the pixels that are not the white background, ``reference_matte``) is also lifted onto a surface: its depth
is the head mesh's depth in the reference view, extended outwards from the mesh's outline over the matte (each
ring of pixels takes the mean depth of its known neighbours), pushed back by ``SHEET_BACK`` so that the head mesh
stays in front wherever it is. The sheet moves rigidly with the head (the least-squares rotation and translation
of the mesh from the reference to each frame) and is depth-tested against the head mesh; its pixels get the
confidence ``SHEET_CONFIDENCE`` (a lifted guess, not the tracked surface). Depth-image-based rendering's "rubber
sheet" (``portrait.lift``), used here as a hair proxy: it brings the projection closer to the ground truth, most
for long hair (``tests/test_pipeline.py``: a held-out identity at 32 px, 9.4 -> 13.6 dB 30 degrees from its
reference).

**Mirror fill** (ours, issue 17; ``mirror``: each head-mesh vertex's mirror image across the head's plane of
symmetry, ``mirror_vertices``): surface the reference does not see takes the colour the reference gives its mirror
image, where the reference sees that (a face and a scalp are close to symmetric: the far cheek gets the near
cheek's skin, the far side of the skull the near side's hair, instead of the mean colour of everything seen), with
confidence ``MIRROR_CONFIDENCE``; and the matte sheet gets its mirror image too (the least-squares reflection that
maps the mesh at the reference frame onto its mirrored vertices), so that hair the reference shows on one side of
the head is also guessed on the other. Symmetric texture completion is an old device of 3D face models; here it
gives the head-mesh projection and the embedded default's generation about +0.3 dB on validation identities and
+1 dB on the held-out ones (README, "Quality report").

**Hair shell** (ours, issue 17; ``scalp``: a per-vertex prior of where hair may grow, ``scalp_weights``): the
sheet is flat, so hair seen from the side was a card standing behind the head and, for a side reference, a 5 cm
flat copy of the face's profile poking out of the skull. With the shell the head mesh itself is inflated along
its normals over the scalp by the hair's thickness, measured in the reference: at the scalp vertices on the mesh's
outline in the reference view, how far the normal can be walked before its projection leaves the reference's
matte (``SHELL_STEP`` steps, at most ``SHELL_CAP``); the thickness elsewhere is the harmonic interpolation of
those measurements over the mesh, made symmetric (the larger of a vertex's and its mirror image's) and scaled by
the prior. The sheet then keeps only its triangles outside the inflated mesh's reference silhouette (the flat
copy of the head goes), and the reference's colour is taken only where its matte is (points of the shell that
project onto the white background count as unseen, not white). Chosen on validation identities against the
true geometry (issue 17's note); held out, the embedded default's generated views 17.05 -> 18.00 dB (README,
"Quality report").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from morph4d.cameras import Cameras
from morph4d.errors import Morph4DError
from morph4d.mesh.align import similarity_transform
from morph4d.mesh.raster import interpolate, rasterize
from morph4d.mesh.shade import vertex_normals
from morph4d.models.latent import LATENT_FACTOR, check_frame_count, kept_frames

WHITE_LEVEL = 0.95        # reference pixels whose every channel is at or above this are background (matted to white)
SHEET_BACK = 0.05         # m: the sheet sits this far behind the depth it was lifted at (hair is a volume around
#                           the skull: 5 cm beat 1 / 3 / 8 / 12 cm on validation identities, README "Quality report")
SHEET_CONFIDENCE = 0.5    # confidence of the sheet's pixels (its mirror image's too)
PROJECTION_VERSION = 4    # of what the projection group and the anchor are made of (2: the mirror fill; 3: the sheet
#                           5 cm back, was 1 cm; 4: the hair shell); a generation run folder of another version is
#                           refused, not resumed with stale latents


class ProjectionMake(NamedTuple):
    """What one version of the projection is made of (module doc)."""
    sheet_back: float     # m: how far the matte sheet sits behind the depth it was lifted at
    mirror: bool          # the mirror fill
    shell: bool           # the hair shell (and the sheet outside it, the matte-aware colour look-up)


# Training can ask for an older make (``TrainConfig.projection_version``): the shipped default was trained on
# version 1 (README "Embedded default"); generation uses the newest
PROJECTION_MAKES = {1: ProjectionMake(0.01, False, False), 2: ProjectionMake(0.01, True, False),
                    3: ProjectionMake(SHEET_BACK, True, False), 4: ProjectionMake(SHEET_BACK, True, True)}
MIRROR_CONFIDENCE = 0.3   # confidence of mesh pixels coloured by their mirror image (a guess: below the sheet's)
MIRROR_FACING = 0.2       # a vertex lends its colour to its mirror image only where it faces the reference this much
SHELL_STEP = 0.0025        # m: the hair shell's thickness is measured in steps of this along the normals
SHELL_CAP = 0.03           # m: and is at most this (3 and 5 cm scored alike on validation identities: issue 17's note)
SHELL_OUTLINE = 2          # px: the shell is measured at vertices whose reference projection is this near the outline
SHELL_GRAZING = 0.35       # ... and whose normal is this close to perpendicular to the reference's ray (|cos| below)
SHELL_SCALP = 0.3          # ... and whose scalp prior is above this
SHELL_SMOOTHING = 300      # Jacobi iterations of the harmonic fill of the thickness over the mesh
# the scalp prior on the canonical template: hair grows above a hairline at this polar angle from straight up about
# the skull's centre, in degrees, at the front of the head (45) rising to the back (120), faded in over SCALP_FADE
# degrees (chosen on validation identities: issue 17's note)
SCALP_HAIRLINE = (45.0, 120.0)
SCALP_FADE = 12.0
CONDITIONING_SUPERSAMPLE = 1   # the projection group is rendered at 1x: it is encoded by the autoencoder, which
#                                smooths edges anyway, and 2x made every training step slower (issue 17's note)


def reference_matte(image: torch.Tensor) -> torch.Tensor:
    """Foreground of a reference matted to white (MVP4D S2.1; ``tracking.portrait``), ``(H, W)`` bool."""
    return image.min(0).values < WHITE_LEVEL


def rigid_motion(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares rotation and translation (Kabsch) with ``dst ~ src @ R.T + t``; src, dst (N, 3)."""
    _, R, t = similarity_transform(src, dst, scale=False)
    return R, t


def matte_sheet(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                back: float = SHEET_BACK, outside: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The matte sheet (module doc) of ``ref_image`` (3, H, W) on the mesh ``verts`` (N, 3) seen by ``ref``:
    world vertices (H * W, 3) at the pixel centres, triangles (T, 3) over 2 x 2 blocks of matte pixels (``outside``:
    only those with a corner outside the mesh's silhouette, as with the hair shell), and the vertices' colours
    (H * W, 3)."""
    H, W = ref.height, ref.width
    r = rasterize(verts, faces, ref)
    known = r.mask[0].clone()
    depth = torch.where(known, r.depth[0], torch.zeros(()))
    matte = reference_matte(ref_image)
    ones = torch.ones(1, 1, 3, 3)
    while known.any() and not known[matte].all():            # one ring of pixels per pass, outwards
        total = F.conv2d((depth * known)[None, None], ones, padding=1)[0, 0]
        count = F.conv2d(known[None, None].float(), ones, padding=1)[0, 0]
        ring = ~known & (count > 0)
        depth = torch.where(ring, total / count.clamp(min=1), depth)
        known = known | ring
    inside = matte & known
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3) @ torch.linalg.inv(ref.K[0]).T   # z = 1
    world = (rays * (depth.reshape(-1, 1) + back) - ref.t[0]) @ ref.R[0]          # R^T (x - t)
    idx = torch.arange(H * W).reshape(H, W)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    ok = (inside[:-1, :-1] & inside[:-1, 1:] & inside[1:, :-1] & inside[1:, 1:]).reshape(-1)
    tri = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3)[ok], torch.stack([b, c, d], -1).reshape(-1, 3)[ok]])
    if outside:
        tri = tri[~r.mask[0].reshape(-1)[tri].all(-1)]
    return world, tri, ref_image.reshape(3, -1).T.contiguous()


_MIRRORS: dict = {}


def mirror_vertices(model) -> torch.Tensor:
    """(N,) index of each vertex's mirror image across the head's plane of symmetry, x = 0 of the canonical frame
    (CONVENTIONS.md): the template vertex nearest the mirrored position. Cached per head model and vertex count."""
    key = (model.name, model.num_vertices)
    if key not in _MIRRORS:
        from scipy.spatial import cKDTree
        t = model.template.detach().double().numpy()
        _MIRRORS[key] = torch.as_tensor(cKDTree(t).query(t * [-1.0, 1.0, 1.0])[1], dtype=torch.long)
    return _MIRRORS[key]


_SCALPS: dict = {}


def scalp_weights(model) -> torch.Tensor:
    """(N,) prior in [0, 1] of where hair may grow on ``model``'s canonical template (``SCALP_HAIRLINE``): 1 over
    the skull, 0 on the face, ears and neck. The skull's centre is taken from the template's bounds (x = 0, 10.4 cm
    below the crown, 1 cm behind the middle of its depth: the built-in head's centre). Cached like
    ``mirror_vertices``."""
    key = (model.name, model.num_vertices)
    if key not in _SCALPS:
        t = model.template.detach().float()
        lo, hi = t.min(0).values, t.max(0).values
        d = t - torch.stack([torch.zeros(()), hi[1] - 0.104, (lo[2] + hi[2]) / 2 - 0.01])
        polar = torch.rad2deg(torch.atan2(torch.linalg.norm(d[:, [0, 2]], dim=1), d[:, 1]))
        front = 0.5 * (1 + torch.cos(torch.atan2(d[:, 0], d[:, 2])))                # 1 at the front, 0 at the back
        hairline = SCALP_HAIRLINE[1] - (SCALP_HAIRLINE[1] - SCALP_HAIRLINE[0]) * front
        x = ((hairline - polar) / SCALP_FADE).clamp(0, 1)
        _SCALPS[key] = x * x * (3 - 2 * x)                                          # smoothstep
    return _SCALPS[key]


def _pixel_of(points: torch.Tensor, ref: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer pixel (u, v) of world points (M, 3) in the camera ``ref``, clamped to the image, and whether inside."""
    uvz = ref.project(points)[0]
    u, v = uvz[:, 0].floor().long(), uvz[:, 1].floor().long()
    inside = (u >= 0) & (u < ref.width) & (v >= 0) & (v < ref.height) & (uvz[:, 2] > 0)
    return u.clamp(0, ref.width - 1), v.clamp(0, ref.height - 1), inside


def hair_thickness(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                   scalp: torch.Tensor, mirror: torch.Tensor | None = None) -> torch.Tensor:
    """The hair shell's thickness (N,) in m (module doc) over the mesh ``verts`` (N, 3) seen by ``ref`` in
    ``ref_image`` (3, H, W); ``scalp``: ``scalp_weights``; ``mirror``: ``mirror_vertices``, to make it symmetric."""
    matte = reference_matte(ref_image)
    mask = rasterize(verts, faces, ref).mask[0].float()[None, None]
    k = 2 * SHELL_OUTLINE + 1
    outline = (F.max_pool2d(mask, k, 1, SHELL_OUTLINE) + F.max_pool2d(-mask, k, 1, SHELL_OUTLINE))[0, 0] > 0.5
    normals = vertex_normals(verts, faces)
    rays = F.normalize(ref.world_to_camera(verts)[0], dim=-1)                 # reference camera frame
    grazing = (normals @ ref.R[0].T * rays).sum(-1).abs() < SHELL_GRAZING
    u, v, inside = _pixel_of(verts, ref)
    known = inside & outline[v, u] & grazing & (scalp > SHELL_SCALP)
    thick = torch.zeros(len(verts))
    walking = known.clone()
    for k in range(1, int(round(SHELL_CAP / SHELL_STEP)) + 1):             # walk out while still on the matte
        u, v, inside = _pixel_of(verts + k * SHELL_STEP * normals, ref)
        walking = walking & inside & matte[v, u]
        thick = torch.where(walking, torch.full_like(thick, k * SHELL_STEP), thick)
    if not known.any():
        return thick
    import scipy.sparse
    i, j = faces.reshape(-1).numpy(), faces[:, [1, 2, 0]].reshape(-1).numpy()    # each triangle's three edges
    n = len(verts)
    adjacency = scipy.sparse.coo_matrix((np.ones(2 * i.size), (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0                                                   # each edge once, however many faces
    degree = np.maximum(adjacency.sum(1).A1, 1.0)
    fixed, values = known.numpy(), thick.double().numpy()
    x = np.where(fixed, values, values[fixed].mean())
    for _ in range(SHELL_SMOOTHING):                                          # harmonic fill, knowns held fixed
        x = np.where(fixed, values, adjacency @ x / degree)
    x = torch.from_numpy(x).float()
    if mirror is not None:
        x = torch.maximum(x, x[mirror])
    return x * scalp


def mirror_sheet(lifted: tuple, verts: torch.Tensor, mirror: torch.Tensor) -> tuple:
    """The matte sheet ``lifted`` (``matte_sheet``'s world vertices, triangles, colours) and its mirror image, by
    the reflection that best maps ``verts`` (N, 3) onto ``verts[mirror]`` (orthogonal Procrustes, det -1)."""
    X, Y = verts.double(), verts[mirror].double()
    mx, my = X.mean(0), Y.mean(0)
    U, _, Vt = torch.linalg.svd((Y - my).T @ (X - mx))
    reflected = ((lifted[0].double() - mx) @ (U @ Vt).T + my).float()
    n = lifted[0].shape[0]
    return (torch.cat([lifted[0], reflected]), torch.cat([lifted[1], lifted[1][:, [0, 2, 1]] + n]),
            torch.cat([lifted[2], lifted[2]]))


def projection_options(model, version: int = PROJECTION_VERSION) -> dict:
    """``project_with_confidence``'s and ``projection_conditioning``'s keyword arguments (``mirror``,
    ``sheet_back``, ``scalp``) for the projection make ``version`` (``PROJECTION_MAKES``) on the head ``model``."""
    make = PROJECTION_MAKES[version]
    return {"sheet_back": make.sheet_back, "mirror": mirror_vertices(model) if make.mirror else None,
            "scalp": scalp_weights(model) if make.shell else None}


def project_reference(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                      cameras: Cameras, supersample: int = 2) -> torch.Tensor:
    """Reference projection of ``ref_image`` (3, h, w) seen by ``ref`` (one camera) onto the mesh ``verts``
    (F, N, 3) / ``faces``, rendered at ``cameras``: (V, F, 3, H, W), at ``supersample`` x and area-averaged."""
    return project_with_confidence(verts, faces, ref, ref_image, cameras, supersample)[0]


def _look_up(points: torch.Tensor, ref: Cameras, ref_image: torch.Tensor, ref_depth: torch.Tensor,
             matte: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's colour (M, 3) at points (M, 3) of its camera frame, and whether it sees them (M,): inside
    the image and not behind what its depth map ``ref_depth`` (inf where empty) holds there (and, given its
    ``matte`` (H, W) bool, on the matte: the hair shell)."""
    uv = ref.K[0] @ points.T                                                # project into the reference camera
    u, v = uv[0] / uv[2].clamp(min=1e-6), uv[1] / uv[2].clamp(min=1e-6)
    grid = torch.stack([2 * u / ref.width - 1, 2 * v / ref.height - 1], -1).view(1, 1, -1, 2)
    color = F.grid_sample(ref_image[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T
    dref = F.grid_sample(ref_depth[None, None].nan_to_num(posinf=1e6), grid, mode="nearest",
                         align_corners=False)[0, 0, 0]
    seen = (points[:, 2] <= dref + 0.01) & (grid.view(-1, 2).abs() <= 1).all(-1)
    if matte is not None:
        seen = seen & (F.grid_sample(matte.float()[None, None], grid, mode="bilinear",
                                     align_corners=False)[0, 0, 0] > 0.5)
    return color, seen


def project_with_confidence(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                            cameras: Cameras, supersample: int = 2, sheet: bool = False,
                            mirror: torch.Tensor | None = None, sheet_back: float = SHEET_BACK,
                            scalp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``project_reference``'s colours (V, F, 3, H, W) and their confidence (V, F, 1, H, W) in [0, 1]: per pixel,
    the cosine between the surface normal at frame 0 and the ray to the reference camera where the reference sees
    the point (grazing views of the reference give blurred texture), 0 where it does not or off the mesh.
    ``sheet``: with the matte sheet (module doc) ``sheet_back`` behind the mesh; ``mirror`` (``mirror_vertices``):
    the mirror fill (module doc) of what the reference does not see; ``scalp`` (``scalp_weights``): the hair
    shell (module doc), the mesh inflated where the reference shows hair around it."""
    matte = None
    if scalp is not None:
        with torch.no_grad():
            thick = hair_thickness(verts[0], faces, ref, ref_image, scalp, mirror)
            verts = verts + thick[:, None] * vertex_normals(verts, faces)
        matte = reference_matte(ref_image)
    frames = verts.shape[0]
    s, H, W = supersample, cameras.height, cameras.width
    # depth of what the reference camera sees at frame 0
    big_ref = ref.resized(ref.width * s, ref.height * s)
    r0 = rasterize(verts[0], faces, big_ref)
    cam_pts0 = verts[0] @ ref.R[0].T + ref.t[0]                             # (N, 3) reference camera frame
    ref_depth = interpolate(cam_pts0[:, 2:], faces, r0)[0, ..., 0]         # (sH, sW)
    ref_depth = torch.where(r0.mask[0], ref_depth, torch.full_like(ref_depth, float("inf")))
    big = cameras.resized(W * s, H * s)
    out = torch.empty(len(cameras), frames, 3, H, W)
    conf = torch.empty(len(cameras), frames, 1, H, W)
    normals0 = vertex_normals(verts[0], faces) @ ref.R[0].T                  # (N, 3) in the reference camera frame
    facing0 = (normals0 * -torch.nn.functional.normalize(cam_pts0, dim=-1)).sum(-1, keepdim=True).clamp(min=0)
    visible_colors = []
    results = []
    with torch.no_grad():
        lifted = None
        if sheet:
            lifted = matte_sheet(verts[0], faces, ref, ref_image, sheet_back, outside=matte is not None)
        lend = None                                          # (N, 4): the mirror image's colour and whether it is seen
        if mirror is not None:
            vcolor, vseen = _look_up(cam_pts0, ref, ref_image, ref_depth, matte)
            vseen = vseen & (facing0[:, 0] > MIRROR_FACING)
            lend = torch.cat([vcolor[mirror], vseen[mirror, None].float()], -1)
            if lifted is not None and len(lifted[1]):
                lifted = mirror_sheet(lifted, verts[0], mirror)
        for f in range(frames):
            r = rasterize(verts[f], faces, big)                             # (V, sH, sW)
            p0 = interpolate(cam_pts0, faces, r)                            # (V, sH, sW, 3): the point at frame 0
            color, seen = _look_up(p0.reshape(-1, 3), ref, ref_image, ref_depth, matte)
            seen = seen & r.mask.reshape(-1)
            visible_colors.append(color[seen])
            cos = interpolate(facing0, faces, r).reshape(-1) * seen                # (V * sH * sW,)
            lent = torch.zeros_like(seen)
            if lend is not None:
                fv = interpolate(lend, faces, r).reshape(-1, 4)
                lent = ~seen & r.mask.reshape(-1) & (fv[:, 3] > 0.5)
                color = torch.where(lent[:, None], fv[:, :3] / fv[:, 3:].clamp(min=1e-6), color)
                cos = torch.where(lent, torch.full_like(cos, MIRROR_CONFIDENCE), cos)
            on_sheet = torch.zeros_like(seen)
            if lifted is not None and len(lifted[1]):
                R, t = rigid_motion(verts[0], verts[f])
                rs = rasterize(lifted[0] @ R.T + t, lifted[1], big)
                on_sheet = (rs.mask & (~r.mask | (rs.depth < r.depth))).reshape(-1)
                color = torch.where(on_sheet[:, None], interpolate(lifted[2], lifted[1], rs).reshape(-1, 3), color)
                cos = torch.where(on_sheet, torch.full_like(cos, SHEET_CONFIDENCE), cos)
            results.append((r.mask.reshape(-1) | on_sheet, seen | on_sheet | lent, color))
            c = cos.view(len(cameras), 1, H * s, W * s)
            conf[:, f] = F.avg_pool2d(c, s) if s > 1 else c
        fill = torch.cat(visible_colors).mean(0) if sum(len(c) for c in visible_colors) else torch.full((3,), 0.5)
        for f, (mask, seen, color) in enumerate(results):
            rgb = torch.where(seen[:, None], color, fill.expand_as(color))
            rgb = torch.where(mask[:, None], rgb, torch.ones_like(rgb))     # white background
            img = rgb.view(len(cameras), H * s, W * s, 3).permute(0, 3, 1, 2)
            out[:, f] = F.avg_pool2d(img, s) if s > 1 else img
    return out, conf


def projection_conditioning(ref_verts: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, ref: Cameras,
                            ref_image: torch.Tensor, cameras: Cameras, mirror: torch.Tensor | None = None,
                            sheet_back: float = SHEET_BACK, scalp: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """MVP4D's ``projection`` conditioning group (ours, issue 17; ``conditioning.maps``) before encoding: the
    reference ``ref_image`` (3, h, w), seen by ``ref`` on the mesh ``ref_verts`` (N, 3) with the matte sheet behind it
    (module doc; ``mirror``: and the mirror fill, ``mirror_vertices``; ``scalp``: and the hair shell,
    ``scalp_weights``; ``projection_options`` gives all three for a make), projected onto the frames
    ``verts`` (F = 1 + 4k, N, 3) in ``cameras`` (V). Returns the projection video (V, F, 3, H, W) in [0, 1], for
    the video autoencoder, and its confidence at the kept frames and latent resolution (V, F_lat, 1, H/8, W/8)."""
    check_frame_count(verts.shape[0])
    if cameras.height % LATENT_FACTOR or cameras.width % LATENT_FACTOR:
        raise Morph4DError(f"image size must be divisible by {LATENT_FACTOR}, got {cameras.width}x{cameras.height}")
    video, conf = project_with_confidence(torch.cat([ref_verts[None], verts]), faces, ref, ref_image, cameras,
                                          supersample=CONDITIONING_SUPERSAMPLE, sheet=True, mirror=mirror,
                                          sheet_back=sheet_back, scalp=scalp)
    conf = conf[:, 1:][:, kept_frames(verts.shape[0])]                       # (V, F_lat, 1, H, W)
    return video[:, 1:], F.avg_pool2d(conf.flatten(0, 1), LATENT_FACTOR).unflatten(0, conf.shape[:2])


__all__ = ["PROJECTION_VERSION", "PROJECTION_MAKES", "ProjectionMake", "WHITE_LEVEL", "SHEET_BACK", "SHEET_CONFIDENCE",
           "MIRROR_CONFIDENCE", "MIRROR_FACING", "SHELL_STEP", "SHELL_CAP", "SCALP_HAIRLINE",
           "CONDITIONING_SUPERSAMPLE", "reference_matte", "rigid_motion", "matte_sheet", "mirror_vertices",
           "scalp_weights", "hair_thickness", "mirror_sheet", "projection_options", "project_reference",
           "project_with_confidence", "projection_conditioning"]
