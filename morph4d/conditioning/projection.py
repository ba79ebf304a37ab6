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

**Hair curtain** (ours, issue 17, make 5; ``template``: the head model's canonical template): the shell only grows
the scalp, so hair that hangs below the ears was left to the flat sheet, a card seen edge-on from the side and
missing from behind. Hair falls: the curtain is a grid round the back of the head (``CURTAIN_GRID``, open
``CURTAIN_OPEN`` degrees either side of the face), its rows from the skull's centre down ``CURTAIN_DROP``, each
hanging just outside the widest the inflated head gets above it. The reference decides where it is: a curtain
point the reference sees well beside the head on the matte (or in front of the head in the hair's colour,
``hair_colour``: the median of the matte beside the head) shows hair there; one it sees beside the head off the
matte, or in front of the head in another colour, shows none; each column hangs down to the lowest row that shows
hair (columns the head hides from the reference: their mirror image's length, else the median). It moves rigidly
with the head, is coloured like the mesh (the reference where it sees it, else the mirror image), and the curtain
and scalp that nobody sees take the hair's colour instead of the mean of everything seen. With it, make 5 takes a
pixel (``SHELL_TRIM``) off the shell's measured thickness (the walk ended on the matte's soft edge, so every view
had a one-pixel rim of hair over the background) and reads colours only where the matte is whole under the
bilinear footprint (``MATTE_STRICT``: the hair's rim no longer picks up white). Chosen on validation identities
against the true geometry (issue 17's note); a short-haired reference gets no curtain.

**The hair's reach** (make 6, ``reach``): on long-haired validation identities the largest part of the masked
error was truth hair where the projection is white: make 5's curtain hangs just outside the head, where hanging
hair spreads out as it falls, and its columns stopped at the reference's lower edge, where a head crop cuts long
hair off. Make 6 measures how far out the hair reaches at each height: the curtain's columns that the reference
sees edge-on are marched outwards (``SHELL_STEP``s, up to ``CURTAIN_REACH``) while they stay a pixel inside its
matte, and each row moves out by the median over them, round the whole curtain; and a column whose lowest hair
row is the last one inside the reference's frame hangs the whole drop (hidden columns take their mirror image's
length as before). Chosen on validation identities picked like the held-out ones (``data.heldout.validation_seeds``;
issue 17's note): letting the spread only grow down the rows, or marching to the matte's very edge, covered more
hair and painted more background.

**The sheet nearer** (make 7): ``SHEET_BACK`` (5 cm) was chosen when the sheet was the only hair (make 3). With the
shell and the curtain the sheet keeps only the matte outside the inflated head, and its depth is carried outwards
from the inflated head's outline, already the hair's outside: 5 cm more most likely put the hair's outer parts
too far back (in other views they slide sideways off where the truth has them, over its background). Make 7 sets
it ``SHEET_BACK_SHELLED`` behind: every angle bin up, masked and unmasked, on three sets of validation identities
(issue 17's note).

**The face guard** (make 8, ``face_guard``): nearer, make 7's sheet passed the depth test in front of the face's
far side in profiles, so hair the reference shows beside the cheek was drawn across it (a dark strand). Make 8
lets the sheet cover the mesh only where the mesh is hair: its scalp weight (``scalp_weights``, 1 on the curtain)
interpolated at the pixel above one half; off the mesh the sheet is drawn as before. Every angle bin up, masked and
unmasked, on the same three sets of validation identities (issue 17's note).
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
SHEET_BACK_SHELLED = 0.02  # m: make 7's, behind the hair shell and curtain (1.5-3 cm alike on validation identities)
SHEET_CONFIDENCE = 0.5    # confidence of the sheet's pixels (its mirror image's too)
PROJECTION_VERSION = 8    # of what the projection group and the anchor are made of (2: the mirror fill; 3: the sheet
#                           5 cm back, was 1 cm; 4: the hair shell; 5: the hair curtain; 6: the hair's reach, out
#                           beside the head and on below the reference's frame; 7: the sheet 2 cm back behind the
#                           shell and curtain; 8: the face guard, the sheet never in front of the face); a generation
#                           run folder of another version is refused, not resumed with stale latents


class ProjectionMake(NamedTuple):
    """What one version of the projection is made of (module doc)."""
    sheet_back: float     # m: how far the matte sheet sits behind the depth it was lifted at
    mirror: bool          # the mirror fill
    shell: bool           # the hair shell (and the sheet outside it, the matte-aware colour look-up)
    curtain: bool = False  # the hair curtain (the hair's colour where unseen, the shell trimmed, the strict look-up)
    reach: bool = False    # the curtain reaches as far as the reference shows hair: out beside it, below its frame
    face_guard: bool = False  # the sheet covers the mesh only where the mesh is hair (scalp or curtain), not the face


# Training can ask for an older make (``TrainConfig.projection_version``): the shipped default was trained on
# version 1 (README "Embedded default"); generation uses the newest
PROJECTION_MAKES = {1: ProjectionMake(0.01, False, False), 2: ProjectionMake(0.01, True, False),
                    3: ProjectionMake(SHEET_BACK, True, False), 4: ProjectionMake(SHEET_BACK, True, True),
                    5: ProjectionMake(SHEET_BACK, True, True, True),
                    6: ProjectionMake(SHEET_BACK, True, True, True, True),
                    7: ProjectionMake(SHEET_BACK_SHELLED, True, True, True, True),
                    8: ProjectionMake(SHEET_BACK_SHELLED, True, True, True, True, True)}
MIRROR_CONFIDENCE = 0.3   # confidence of mesh pixels coloured by their mirror image (a guess: below the sheet's)
MIRROR_FACING = 0.2       # a vertex lends its colour to its mirror image only where it faces the reference this much
SHELL_STEP = 0.0025        # m: the hair shell's thickness is measured in steps of this along the normals
SHELL_CAP = 0.03           # m: and is at most this (3 and 5 cm scored alike on validation identities: issue 17's note)
SHELL_OUTLINE = 2          # px: the shell is measured at vertices whose reference projection is this near the outline
SHELL_GRAZING = 0.35       # ... and whose normal is this close to perpendicular to the reference's ray (|cos| below)
SHELL_SCALP = 0.3          # ... and whose scalp prior is above this
SHELL_SMOOTHING = 300      # Jacobi iterations of the harmonic fill of the thickness over the mesh
SHELL_TRIM = 1.0           # px: make 5 takes this off the measured thickness (at the vertex's depth): the walk ends
#                            on the matte's soft edge, a pixel out (1 chosen over 0.5 and 1.5 on validation identities)
# make 5's hanging-hair curtain (module doc); chosen on validation identities (issue 17's note)
CURTAIN_GRID = (32, 64)    # rows from the skull's centre down, columns round the back of the head
CURTAIN_OPEN = 60.0        # deg: open in front of the face (columns at azimuth 60-300 about the skull; 45 and 75 alike)
CURTAIN_DROP = 0.30        # m: its last row is this far below the skull's centre
CURTAIN_MARGIN = 0.003     # m: it hangs this far outside the widest part of the head (with its shell) above it
CURTAIN_CLEAR = 2          # px: a curtain point this far beside the head's silhouette on the matte shows hair there ...
CURTAIN_SLACK = 1          # ... and one this far off the matte shows none (make 6's reach stays this far inside it)
CURTAIN_REACH = 0.03      # m: make 6 looks this far out beside the curtain for the hair's reach (3 and 5 cm alike)
CURTAIN_COLOUR = 0.15      # in front of the head, a reference pixel this close to the hair's colour (RGB) shows hair
HAIR_BESIDE = 0.01         # the hair's colour is taken where at least this much of the image is matte beside the head
MATTE_STRICT = 0.99        # make 5's colour look-up: a point is seen only where its bilinear footprint is all matte
#                            (0.5, make 4: the rim of the hair picked up the white background)
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


def _grid_triangles(ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Two triangles (T, 3) per cell of a grid of vertex ids (h, w) whose four corners ``keep`` (h, w) holds."""
    a, b, c, d = ids[:-1, :-1], ids[:-1, 1:], ids[1:, :-1], ids[1:, 1:]
    ok = (keep[:-1, :-1] & keep[:-1, 1:] & keep[1:, :-1] & keep[1:, 1:]).reshape(-1)
    return torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3)[ok], torch.stack([b, c, d], -1).reshape(-1, 3)[ok]])


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
    tri = _grid_triangles(torch.arange(H * W).reshape(H, W), inside)
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


def skull_centre(template: torch.Tensor) -> torch.Tensor:
    """(3,) the skull's centre on a canonical head template (N, 3): x = 0, 10.4 cm below the crown, 1 cm behind
    the middle of its depth (the built-in head's centre)."""
    t = template.detach().float()
    lo, hi = t.min(0).values, t.max(0).values
    return torch.stack([torch.zeros(()), hi[1] - 0.104, (lo[2] + hi[2]) / 2 - 0.01])


def scalp_weights(model) -> torch.Tensor:
    """(N,) prior in [0, 1] of where hair may grow on ``model``'s canonical template (``SCALP_HAIRLINE``): 1 over
    the skull, 0 on the face, ears and neck. The skull's centre is taken from the template's bounds (x = 0, 10.4 cm
    below the crown, 1 cm behind the middle of its depth: the built-in head's centre). Cached like
    ``mirror_vertices``."""
    key = (model.name, model.num_vertices)
    if key not in _SCALPS:
        t = model.template.detach().float()
        d = t - skull_centre(t)
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
                   scalp: torch.Tensor, mirror: torch.Tensor | None = None, trim: float = 0.0) -> torch.Tensor:
    """The hair shell's thickness (N,) in m (module doc) over the mesh ``verts`` (N, 3) seen by ``ref`` in
    ``ref_image`` (3, H, W); ``scalp``: ``scalp_weights``; ``mirror``: ``mirror_vertices``, to make it symmetric;
    ``trim``: pixels taken off each measurement, at the vertex's depth (make 5: ``SHELL_TRIM``)."""
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
    if trim:                                        # the matte's soft edge: the walk overshoots by about this much
        depth = ref.world_to_camera(verts)[0][:, 2]
        thick = (thick - trim * depth / ref.K[0, 0, 0]).clamp(min=0)
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


def _dilated(mask: torch.Tensor, px: int) -> torch.Tensor:
    """An (H, W) bool mask grown by ``px`` pixels (a square neighbourhood)."""
    return F.max_pool2d(mask.float()[None, None], 2 * px + 1, 1, px)[0, 0] > 0.5


def hair_colour(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor) -> torch.Tensor | None:
    """The hair's colour (3,) in ``ref_image`` (3, H, W): the median of its matte more than a pixel outside the head
    mesh ``verts``' silhouette in ``ref`` (None where that is under ``HAIR_BESIDE`` of the image: no hair beside the
    head to take it from)."""
    beside = reference_matte(ref_image) & ~_dilated(rasterize(verts, faces, ref).mask[0], 1)
    if beside.float().mean() < HAIR_BESIDE:
        return None
    return ref_image[:, beside].median(dim=1).values


def hair_curtain(bare: torch.Tensor, inflated: torch.Tensor, faces: torch.Tensor, template: torch.Tensor,
                 ref: Cameras, ref_image: torch.Tensor, hair_rgb: torch.Tensor | None, reach: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hanging-hair curtain (module doc) of the reference ``ref_image`` (3, H, W) seen by ``ref``, round the head
    mesh ``bare`` (N, 3; ``inflated``: with the hair shell; ``template``: the head model's canonical template, for
    the skull's frame; ``hair_rgb``: ``hair_colour``; ``reach``: make 6, each row as far out as the reference
    shows the hair beside it, and a column whose lowest hair is the last row inside the reference's frame hangs
    the whole drop): world vertices (M, 3), triangles (T, 3) (none where the reference shows no hair hanging) and
    each vertex's mirror image (M,)."""
    _, R0, t0 = similarity_transform(template.float(), bare.float(), scale=False)   # canonical -> reference frame
    centre = skull_centre(template)
    canon = (inflated.float() - t0) @ R0 - centre                          # the inflated head about the skull centre
    rows, cols = CURTAIN_GRID
    step = (360.0 - 2 * CURTAIN_OPEN) / (cols - 1)
    azimuth = CURTAIN_OPEN + step * torch.arange(cols)                      # round the back, symmetric in x
    # the widest the head gets at each height (row) near each azimuth (column), then hair falls: never in below it
    az = torch.remainder(torch.rad2deg(torch.atan2(canon[:, 0], canon[:, 2])), 360.0)
    row = (-canon[:, 1] / (CURTAIN_DROP / (rows - 1))).round().long()
    col = ((az - CURTAIN_OPEN) / step).round().long() + 2                  # two columns of slack each side
    ok = (row >= 0) & (row < rows) & (col >= 0) & (col < cols + 4)
    widest = torch.zeros(rows * (cols + 4)).scatter_reduce(0, row[ok] * (cols + 4) + col[ok],
                                                            torch.linalg.norm(canon[ok][:, [0, 2]], dim=1), "amax")
    widest = F.max_pool1d(widest.view(rows, 1, cols + 4), 5, 1, 2)[:, 0, 2:-2]
    r = torch.cummax(widest, dim=0).values + CURTAIN_MARGIN                 # (rows, cols)
    a = torch.deg2rad(azimuth)[None]
    y = torch.linspace(0.0, -CURTAIN_DROP, rows)[:, None].expand(rows, cols)
    world = (torch.stack([r * a.sin(), y, r * a.cos()], -1).reshape(-1, 3) + centre) @ R0.T + t0
    # what the reference shows there: hair beside the head or in front of it in the hair's colour; no hair
    rr = rasterize(inflated, faces, ref)
    silhouette = rr.mask[0]
    depth = interpolate(ref.world_to_camera(inflated)[0][:, 2:], faces, rr)[0, ..., 0]
    depth = torch.where(silhouette, depth, torch.full_like(depth, float("inf")))
    u, v, inside = _pixel_of(world, ref)
    seen = inside & (ref.world_to_camera(world)[0][:, 2] <= depth[v, u])
    matte = reference_matte(ref_image)
    over = silhouette[v, u]                                                 # in front of the head
    clear = ~_dilated(silhouette, CURTAIN_CLEAR)[v, u]                      # well beside it
    hairlike = ((ref_image[:, v, u].T - hair_rgb).norm(dim=1) < CURTAIN_COLOUR if hair_rgb is not None
                else torch.zeros_like(seen))
    hair = (seen & matte[v, u] & (clear | (over & hairlike))).view(rows, cols)
    no_hair = (seen & ((clear & ~_dilated(matte, CURTAIN_SLACK)[v, u]) | (over & ~hairlike))).view(rows, cols)
    if not hair.any():
        return world[:0], torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    if reach:
        # how far out the hair reaches at each height (make 6): march the columns the reference sees edge-on
        # outwards while they stay on its matte (a pixel in from its soft edge); each row takes the median over them
        steps = torch.arange(1, int(round(CURTAIN_REACH / SHELL_STEP)) + 1) * SHELL_STEP      # (S,)
        rs = r[None] + steps[:, None, None]                                                  # (S, rows, cols)
        pts = torch.stack([rs * a.sin(), y.expand_as(rs), rs * a.cos()], -1).reshape(-1, 3)
        pu, pv, pin = _pixel_of((pts + centre) @ R0.T + t0, ref)
        core = ~_dilated(~matte, CURTAIN_SLACK)
        extent = torch.cumprod((pin & core[pv, pu]).view(len(steps), rows, cols).int(), 0).sum(0) * SHELL_STEP
        outward = torch.stack([a.sin(), torch.zeros_like(a), a.cos()], -1)[0] @ R0.T        # (cols, 3) world
        rays = F.normalize(world - ref.centers[0], dim=-1).view(rows, cols, 3)
        edge_on = ((rays * outward[None]).sum(-1).abs() < SHELL_GRAZING) & hair
        spread = torch.where(edge_on, extent, torch.full_like(extent, float("nan"))).nanmedian(1).values
        r = r + spread.nan_to_num(0.0)[:, None]
        world = (torch.stack([r * a.sin(), y, r * a.cos()], -1).reshape(-1, 3) + centre) @ R0.T + t0
    # each column hangs down to the lowest row the reference shows hair at (hidden columns: their mirror image's,
    # else the median of the columns that show it), less the points the reference shows bare
    index = torch.arange(rows)[:, None].expand(rows, cols)
    length = torch.where(hair, index, torch.full_like(index, -1)).amax(0)
    if reach:             # the reference's frame cut the hair off, not its length: it goes on below (make 6)
        below = torch.cat([~inside.view(rows, cols)[1:], torch.zeros(1, cols, dtype=torch.bool)])
        cut = (length >= 0) & below.gather(0, length.clamp(min=0)[None])[0]
        length = torch.where(cut, torch.full_like(length, rows - 1), length)
    mirror = torch.arange(cols).flip(0)
    length = torch.where(length < 0, length[mirror], length)
    length = torch.where(length < 0, length[length >= 0].float().median().long(), length)
    keep = (index <= length) & ~no_hair
    ids = torch.arange(rows * cols).view(rows, cols)
    return world, _grid_triangles(ids, keep), ids[:, mirror].reshape(-1)


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
    ``sheet_back``, ``scalp``, ``template``, ``reach``, ``face_guard``) for the projection make ``version``
    (``PROJECTION_MAKES``) on the head ``model``."""
    make = PROJECTION_MAKES[version]
    return {"sheet_back": make.sheet_back, "mirror": mirror_vertices(model) if make.mirror else None,
            "scalp": scalp_weights(model) if make.shell else None,
            "template": model.template.detach() if make.curtain else None, "reach": make.reach,
            "face_guard": make.face_guard}


def project_reference(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                      cameras: Cameras, supersample: int = 2) -> torch.Tensor:
    """Reference projection of ``ref_image`` (3, h, w) seen by ``ref`` (one camera) onto the mesh ``verts``
    (F, N, 3) / ``faces``, rendered at ``cameras``: (V, F, 3, H, W), at ``supersample`` x and area-averaged."""
    return project_with_confidence(verts, faces, ref, ref_image, cameras, supersample)[0]


def _look_up(points: torch.Tensor, ref: Cameras, ref_image: torch.Tensor, ref_depth: torch.Tensor,
             matte: torch.Tensor | None = None, level: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's colour (M, 3) at points (M, 3) of its camera frame, and whether it sees them (M,): inside
    the image and not behind what its depth map ``ref_depth`` (inf where empty) holds there (and, given its
    ``matte`` (H, W) bool, on the matte: the matte bilinearly sampled there above ``level``; the hair shell)."""
    uv = ref.K[0] @ points.T                                                # project into the reference camera
    u, v = uv[0] / uv[2].clamp(min=1e-6), uv[1] / uv[2].clamp(min=1e-6)
    grid = torch.stack([2 * u / ref.width - 1, 2 * v / ref.height - 1], -1).view(1, 1, -1, 2)
    color = F.grid_sample(ref_image[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T
    dref = F.grid_sample(ref_depth[None, None].nan_to_num(posinf=1e6), grid, mode="nearest",
                         align_corners=False)[0, 0, 0]
    seen = (points[:, 2] <= dref + 0.01) & (grid.view(-1, 2).abs() <= 1).all(-1)
    if matte is not None:
        seen = seen & (F.grid_sample(matte.float()[None, None], grid, mode="bilinear",
                                     align_corners=False)[0, 0, 0] > level)
    return color, seen


def project_with_confidence(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                            cameras: Cameras, supersample: int = 2, sheet: bool = False,
                            mirror: torch.Tensor | None = None, sheet_back: float = SHEET_BACK,
                            scalp: torch.Tensor | None = None, template: torch.Tensor | None = None,
                            reach: bool = False, face_guard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``project_reference``'s colours (V, F, 3, H, W) and their confidence (V, F, 1, H, W) in [0, 1]: per pixel,
    the cosine between the surface normal at frame 0 and the ray to the reference camera where the reference sees
    the point (grazing views of the reference give blurred texture), 0 where it does not or off the mesh.
    ``sheet``: with the matte sheet (module doc) ``sheet_back`` behind the mesh; ``mirror`` (``mirror_vertices``):
    the mirror fill (module doc) of what the reference does not see; ``scalp`` (``scalp_weights``): the hair
    shell (module doc), the mesh inflated where the reference shows hair around it; ``template`` (the head model's
    canonical template; with ``scalp`` and ``mirror``): make 5, the hanging-hair curtain (module doc), the hair's
    colour where nobody sees it, the shell trimmed by ``SHELL_TRIM`` and the strict matte look-up; ``reach``:
    make 6, the curtain reaches out as far as the reference shows hair beside it and on below its frame
    (``hair_curtain``); ``face_guard`` (with ``scalp``): make 8, the sheet is drawn in front of the mesh only
    where the mesh is hair (its interpolated scalp weight, 1 on the curtain, above one half), so hair the reference
    shows beside the cheek never covers the face's far side in a profile."""
    matte, level = None, 0.5
    n_head = verts.shape[1]
    hair_rgb = None
    if scalp is not None:
        with torch.no_grad():
            thick = hair_thickness(verts[0], faces, ref, ref_image, scalp, mirror,
                                   SHELL_TRIM if template is not None else 0.0)
            bare = verts
            verts = verts + thick[:, None] * vertex_normals(verts, faces)
        matte = reference_matte(ref_image)
        if template is not None:
            if mirror is None:
                raise Morph4DError("the hair curtain (projection make 5) needs the mirror fill: pass mirror too")
            level = MATTE_STRICT
            with torch.no_grad():
                hair_rgb = hair_colour(bare[0], faces, ref, ref_image)
                cv, cf, cm = hair_curtain(bare[0], verts[0], faces, template, ref, ref_image, hair_rgb, reach)
                if len(cf):
                    moved = [cv @ R.T + t for R, t in (rigid_motion(bare[0], b) for b in bare)]
                    verts = torch.cat([verts, torch.stack(moved)], 1)
                    faces = torch.cat([faces, cf + n_head])
                    mirror = torch.cat([mirror, cm + n_head])
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
            vcolor, vseen = _look_up(cam_pts0, ref, ref_image, ref_depth, matte, level)
            vseen = vseen & (facing0[:, 0] > MIRROR_FACING)
            lend = torch.cat([vcolor[mirror], vseen[mirror, None].float()], -1)
            if hair_rgb is not None:         # the curtain and the scalp nobody sees take the hair's colour
                hairy = torch.cat([scalp > 0.5, torch.ones(len(lend) - n_head, dtype=torch.bool)]) & (lend[:, 3] < 0.5)
                lend[hairy] = torch.cat([hair_rgb, torch.ones(1)])
            if lifted is not None and len(lifted[1]):
                lifted = mirror_sheet(lifted, verts[0], mirror)
        hair_weight = None                                  # (N, 1): make 8's face guard, 1 on the curtain
        if face_guard and scalp is not None:
            hair_weight = torch.cat([scalp, torch.ones(verts.shape[1] - n_head)])[:, None]
        for f in range(frames):
            r = rasterize(verts[f], faces, big)                             # (V, sH, sW)
            p0 = interpolate(cam_pts0, faces, r)                            # (V, sH, sW, 3): the point at frame 0
            color, seen = _look_up(p0.reshape(-1, 3), ref, ref_image, ref_depth, matte, level)
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
                in_front = rs.depth < r.depth
                if hair_weight is not None:                                # hair never covers the face
                    in_front = in_front & (interpolate(hair_weight, faces, r)[..., 0] > 0.5)
                on_sheet = (rs.mask & (~r.mask | in_front)).reshape(-1)
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
                            sheet_back: float = SHEET_BACK, scalp: torch.Tensor | None = None,
                            template: torch.Tensor | None = None, reach: bool = False, face_guard: bool = False
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """MVP4D's ``projection`` conditioning group (ours, issue 17; ``conditioning.maps``) before encoding: the
    reference ``ref_image`` (3, h, w), seen by ``ref`` on the mesh ``ref_verts`` (N, 3) with the matte sheet behind it
    (module doc; ``mirror``: and the mirror fill, ``mirror_vertices``; ``scalp``: and the hair shell,
    ``scalp_weights``; ``template``: and the hair curtain, the head model's template; ``reach``: make 6's
    curtain; ``face_guard``: make 8's sheet; ``projection_options`` gives all six for a make), projected onto the frames
    ``verts`` (F = 1 + 4k, N, 3) in ``cameras`` (V). Returns the projection video (V, F, 3, H, W) in [0, 1], for
    the video autoencoder, and its confidence at the kept frames and latent resolution (V, F_lat, 1, H/8, W/8)."""
    check_frame_count(verts.shape[0])
    if cameras.height % LATENT_FACTOR or cameras.width % LATENT_FACTOR:
        raise Morph4DError(f"image size must be divisible by {LATENT_FACTOR}, got {cameras.width}x{cameras.height}")
    video, conf = project_with_confidence(torch.cat([ref_verts[None], verts]), faces, ref, ref_image, cameras,
                                          supersample=CONDITIONING_SUPERSAMPLE, sheet=True, mirror=mirror,
                                          sheet_back=sheet_back, scalp=scalp, template=template, reach=reach,
                                          face_guard=face_guard)
    conf = conf[:, 1:][:, kept_frames(verts.shape[0])]                       # (V, F_lat, 1, H, W)
    return video[:, 1:], F.avg_pool2d(conf.flatten(0, 1), LATENT_FACTOR).unflatten(0, conf.shape[:2])


__all__ = ["PROJECTION_VERSION", "PROJECTION_MAKES", "ProjectionMake", "WHITE_LEVEL", "SHEET_BACK",
           "SHEET_BACK_SHELLED", "SHEET_CONFIDENCE", "MIRROR_CONFIDENCE", "MIRROR_FACING", "SHELL_STEP", "SHELL_CAP",
           "SHELL_TRIM", "SCALP_HAIRLINE",
           "CURTAIN_GRID", "CURTAIN_OPEN", "CURTAIN_DROP", "MATTE_STRICT", "skull_centre", "hair_colour",
           "hair_curtain",
           "CONDITIONING_SUPERSAMPLE", "reference_matte", "rigid_motion", "matte_sheet", "mirror_vertices",
           "scalp_weights", "hair_thickness", "mirror_sheet", "projection_options", "project_reference",
           "project_with_confidence", "projection_conditioning"]
