"""Mesh rasterizer: numba fast path vs torch reference twin, hand-computed coverage, depth and
barycentrics, occlusion, interpolation (incl. gradients), the camera wrapper and input validation."""

import math

import pytest
import torch

from morph4d.cameras import Cameras
from morph4d.mesh.raster import interpolate, rasterize, rasterize_screen

BACKENDS = ["numba", "torch"]


def make_cameras(R, t, K, width, height):
    return Cameras(R, t, K.clone(), width, height)


def look_at_origin(eyes, width, height, fov_deg=40.0):
    """OpenCV cameras at world positions ``eyes`` (B, 3) looking at the origin, world +y up."""
    z = -eyes / eyes.norm(dim=-1, keepdim=True)  # camera +z: towards the origin
    x = torch.linalg.cross(z, torch.tensor([0.0, 1.0, 0.0]).expand_as(z))  # camera +x: right
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x)  # camera +y: down
    R = torch.stack([x, y, z], dim=1)  # rows are the camera axes in world coordinates
    t = -torch.einsum("bij,bj->bi", R, eyes)
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]).expand(len(eyes), 3, 3)
    return make_cameras(R, t, K, width, height)


def icosphere(subdivisions, radius=1.0):
    """Closed triangle sphere, outward counter-clockwise winding: (V, 3) float32, (T, 3) int64."""
    p = (1 + 5 ** 0.5) / 2
    verts = [[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0], [0, -1, p], [0, 1, p], [0, -1, -p], [0, 1, -p],
             [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]]
    faces = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
             [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
             [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    for _ in range(subdivisions):
        midpoint, new_faces = {}, []

        def mid(a, b):
            if (a, b) not in midpoint:
                midpoint[(a, b)] = midpoint[(b, a)] = len(verts)
                verts.append([(verts[a][k] + verts[b][k]) / 2 for k in range(3)])
            return midpoint[(a, b)]

        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new_faces += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = new_faces
    v = torch.tensor(verts, dtype=torch.float32)
    return radius * v / v.norm(dim=-1, keepdim=True), torch.tensor(faces, dtype=torch.int64)


def test_fast_path_matches_twin():
    g = torch.Generator().manual_seed(0)
    # A few hundred small random triangles (both windings, overlapping) around the origin, plus a
    # closed icosphere, seen by two cameras.
    soup = (torch.rand(400, 3, 3, generator=g) - 0.5) * torch.tensor([1.2, 1.2, 0.6])
    soup = soup[:, :1] + 0.25 * (soup - soup[:, :1])  # shrink each triangle towards its first vertex
    sphere_v, sphere_f = icosphere(2, radius=0.3)
    vertices = torch.cat([soup.reshape(-1, 3), sphere_v])
    faces = torch.cat([torch.arange(1200).reshape(400, 3), sphere_f + 1200])
    cameras = look_at_origin(torch.tensor([[0.0, 0.0, 2.0], [1.2, 0.5, 1.5]]), width=40, height=32)

    fast = rasterize(vertices, faces, cameras, backend="numba")
    twin = rasterize(vertices, faces, cameras, backend="torch")
    assert fast.triangle_id.shape == (2, 32, 40) and fast.bary.shape == (2, 32, 40, 3)
    assert 0.3 < fast.mask.float().mean() < 0.99  # a real mix of covered and empty pixels
    assert torch.equal(fast.mask, twin.mask)
    same = fast.triangle_id == twin.triangle_id
    assert same.float().mean() >= 0.999
    torch.testing.assert_close(fast.bary[same], twin.bary[same], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.depth[same], twin.depth[same], atol=1e-5, rtol=0)
    assert torch.all(fast.depth[~fast.mask] == 0) and torch.all(fast.bary[~fast.mask] == 0)
    # Batch-vs-single: the fast path splits work differently for B=1 (image bands), same answer.
    for b in range(2):
        single = rasterize(vertices, faces, make_cameras(cameras.R[b:b + 1], cameras.t[b:b + 1],
                                                         cameras.K[b:b + 1], 40, 32), backend="numba")
        assert torch.equal(single.triangle_id[0], fast.triangle_id[b])
        assert torch.equal(single.bary[0], fast.bary[b])


# Screen triangle with integer + 0.5 vertices, so its edge functions are exact in float64:
# vertex 0 sits on the centre of pixel (row 3, col 2), vertex 1 on (3, 10), vertex 2 on (11, 2).
TRI_UV = torch.tensor([[2.5, 3.5], [10.5, 3.5], [2.5, 11.5]], dtype=torch.float64)
TRI_Z = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flip", [False, True])
def test_single_triangle_coverage_depth_and_bary(backend, flip):
    order = [0, 2, 1] if flip else [0, 1, 2]
    screen = torch.cat([TRI_UV, TRI_Z[:, None]], dim=-1)[None]  # (1, 3, 3)
    H, W = 14, 12
    r = rasterize_screen(screen, torch.tensor([order]), H, W, backend=backend)

    # Centres on the edges count as inside (>= 0): rows >= 3, cols >= 2, (row - 3) + (col - 2) <= 8.
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    expected = (i >= 3) & (j >= 2) & (i + j <= 13)
    assert torch.equal(r.mask[0], expected)
    assert int(expected.sum()) == 45

    # Depth is the depth of the 3D plane through the unprojected vertices, hit by each pixel's ray.
    K = torch.tensor([[50.0, 0.0, 6.0], [0.0, 50.0, 7.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    rays = torch.linalg.solve(K, torch.cat([TRI_UV, torch.ones(3, 1, dtype=torch.float64)], -1).T).T
    P = TRI_Z[:, None] * rays  # (3, 3) camera-space vertices
    normal = torch.linalg.cross(P[1] - P[0], P[2] - P[0])
    pix = torch.stack([j[expected] + 0.5, i[expected] + 0.5, torch.ones(45)], -1).double()
    pix_rays = torch.linalg.solve(K, pix.T).T  # (45, 3), z = 1
    plane_depth = (normal @ P[0]) / (pix_rays @ normal)
    torch.testing.assert_close(r.depth[0][expected].double(), plane_depth, rtol=1e-6, atol=0)

    # Barycentrics at the vertex-aligned centres, in the order the face lists its vertices.
    for vertex, (row, col) in enumerate([(3, 2), (3, 10), (11, 2)]):
        onehot = torch.zeros(3)
        onehot[order.index(vertex)] = 1.0
        torch.testing.assert_close(r.bary[0, row, col], onehot, atol=1e-6, rtol=0)
        assert r.depth[0, row, col] == pytest.approx(float(TRI_Z[vertex]), rel=1e-6)

    # Perspective-correct: interpolating the camera-space vertices gives the 3D point on each ray.
    points = interpolate(P[order].float(), torch.tensor([[0, 1, 2]]), r)[0][expected]
    torch.testing.assert_close(points.double(), pix_rays * plane_depth[:, None], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearer_triangle_wins_regardless_of_order(backend):
    # No pixel centre lies on an edge of the near triangle: u, v >= 0.75 and u + v <= 17.5.
    near_tri = [[0.75, 0.75, 1.0], [16.75, 0.75, 1.0], [0.75, 16.75, 1.0]]
    far_tri = [[0.0, 0.0, 3.0], [32.0, 0.0, 3.0], [0.0, 32.0, 3.0]]  # covers the whole 16 x 16 image
    i, j = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    in_far = torch.ones(16, 16, dtype=torch.bool)
    in_near = (i >= 1) & (j >= 1) & (i + j <= 16)
    for tris, near_id in [([near_tri, far_tri], 0), ([far_tri, near_tri], 1)]:
        screen = torch.tensor(tris).reshape(1, 6, 3)
        r = rasterize_screen(screen, torch.arange(6).reshape(2, 3), 16, 16, backend=backend)
        assert torch.equal(r.mask[0], in_far)
        assert torch.all(r.triangle_id[0][in_near] == near_id)
        assert torch.all(r.triangle_id[0][in_far & ~in_near] == 1 - near_id)  # the far one shows around it
        torch.testing.assert_close(r.depth[0][in_near], torch.ones(int(in_near.sum())))


def test_backface_culling_keeps_counter_clockwise_front_faces():
    # Camera at the origin looking down +z; this triangle's (p1 - p0) x (p2 - p0) points at the camera.
    front = torch.tensor([[[0.0, 0.0, 2.0], [0.0, 1.0, 2.0], [1.0, 0.0, 2.0]]])
    cameras = make_cameras(torch.eye(3)[None], torch.zeros(1, 3),
                           torch.tensor([[[8.0, 0.0, 8.0], [0.0, 8.0, 8.0], [0.0, 0.0, 1.0]]]), 16, 16)
    for backend in BACKENDS:
        kept = rasterize(front, torch.tensor([[0, 1, 2]]), cameras, backend=backend, cull_backfaces=True)
        culled = rasterize(front, torch.tensor([[0, 2, 1]]), cameras, backend=backend, cull_backfaces=True)
        both = rasterize(front, torch.tensor([[0, 2, 1]]), cameras, backend=backend)
        assert kept.mask.sum() > 5 and not culled.mask.any() and torch.equal(both.mask, kept.mask)


def test_interpolate_depth_constant_and_gradients():
    vertices, faces = icosphere(1, radius=0.5)
    cameras = look_at_origin(torch.tensor([[0.0, 0.3, 2.0], [-1.5, 0.0, 1.0]]), width=20, height=16)
    r = rasterize(vertices, faces, cameras)
    assert 0.1 < r.mask.float().mean() < 0.9

    z_cam = cameras.project(vertices)[..., 2:]  # (B, N, 1)
    torch.testing.assert_close(interpolate(z_cam, faces, r)[..., 0], r.depth, rtol=1e-5, atol=1e-6)

    const = interpolate(torch.full((len(vertices), 2), 0.7), faces, r)  # (N, C) shared by the batch
    assert const.shape == (2, 16, 20, 2)
    torch.testing.assert_close(const[r.mask], torch.full_like(const[r.mask], 0.7))
    assert torch.all(const[~r.mask] == 0)

    attrs = torch.rand(2, len(vertices), 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, faces, r), (attrs,), fast_mode=True)
    interpolate(attrs, faces, r).sum().backward()
    # Each covered pixel sends weight 1 (barycentrics sum to 1) to its triangle's vertices.
    torch.testing.assert_close(attrs.grad.sum(dim=(1, 2)), 3 * r.mask.sum(dim=(1, 2)).double(), rtol=1e-5, atol=0)


def test_camera_projection_known_pixel_and_behind_camera():
    # Camera 0.6 m in front of the face (world +z), looking back at the origin: R = diag(1, -1, -1).
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None]
    t = torch.tensor([[0.0, 0.0, 0.6]])
    K = torch.tensor([[[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]]])
    cameras = make_cameras(R, t, K, width=64, height=48)
    # World (0.06, 0.03, 0) is 0.6 m deep, 0.1 * 100 = 10 px right and 5 px up of the principal point.
    uvz = cameras.project(torch.tensor([[[0.06, 0.03, 0.0]]]))
    torch.testing.assert_close(uvz, torch.tensor([[[42.0, 19.0, 0.6]]]))
    # A tiny triangle around that point covers exactly pixel (row 18, col 41), whose centre is (41.5, 18.5).
    tri = torch.tensor([[0.0555, 0.0345, 0.0], [0.0555, 0.0315, 0.0], [0.0585, 0.0330, 0.0]])
    r = rasterize(tri, torch.tensor([[0, 1, 2]]), cameras)
    assert r.mask.sum() == 1 and r.mask[0, 18, 41]
    assert r.depth[0, 18, 41] == pytest.approx(0.6, rel=1e-6)

    behind = tri + torch.tensor([0.0, 0.0, 1.0])  # z_world = 1 -> z_cam = -0.4
    straddling = torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 0.7], [0.0, 0.01, 0.0]])  # one vertex behind
    for verts in (behind, straddling):
        for backend in BACKENDS:
            assert not rasterize(verts, torch.tensor([[0, 1, 2]]), cameras, backend=backend).mask.any()


ONE_CAMERA = make_cameras(torch.eye(3)[None], torch.zeros(1, 3), torch.eye(3)[None], 8, 8)


@pytest.mark.parametrize("call, message", [
    (lambda s, f: rasterize_screen(s, f[:, :2], 8, 8), r"faces must be a \(T, 3\) int64 tensor, got \(1, 2\)"),
    (lambda s, f: rasterize_screen(s, f.int(), 8, 8), r"faces must be a \(T, 3\) int64 tensor, got .*int32"),
    (lambda s, f: rasterize_screen(s, f + 5, 8, 8), r"faces must index vertices in \[0, 3\)"),
    (lambda s, f: rasterize_screen(s[0], f, 8, 8), r"screen must be a \(B, N, 3\) floating-point"),
    (lambda s, f: rasterize_screen(s.long(), f, 8, 8), r"screen must be .*int64"),
    (lambda s, f: rasterize_screen(s, f, 0, 8), r"height and width must be positive ints"),
    (lambda s, f: rasterize_screen(s, f, 8, 8, backend="cuda"), r"backend must be one of"),
    (lambda s, f: interpolate(torch.ones(2, 3, 1), f, rasterize_screen(s, f, 8, 8)), r"attributes must be"),
    (lambda s, f: interpolate(torch.ones(2, 1), f, rasterize_screen(s, f, 8, 8)), r"faces must index vertices"),
    (lambda s, f: rasterize(s.expand(2, -1, -1), f, ONE_CAMERA),
     r"vertices must be floating-point \(N, 3\) or \(B=1, N, 3\)"),
    (lambda s, f: rasterize(s[0].long(), f, ONE_CAMERA), r"vertices must be floating-point .*int64"),
])
def test_bad_input_raises_helpful_value_error(call, message):
    screen = torch.tensor([[[1.0, 1.0, 1.0], [6.0, 1.0, 1.0], [1.0, 6.0, 1.0]]])  # (1, 3, 3)
    with pytest.raises(ValueError, match=message):
        call(screen, torch.tensor([[0, 1, 2]]))
