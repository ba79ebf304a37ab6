"""3D Gaussians for the 4D avatar (MVP4D §4, S2.4): a differentiable splatting rasterizer and Gaussians bound
to head-mesh triangles (GaussianAvatars)."""

from morph4d.avatar.gaussians.binding import (
                                       BoundGaussians,
                                       WorldGaussians,
                                       matrix_to_quaternion,
                                       quaternion_multiply,
                                       triangle_frames,
)
from morph4d.avatar.gaussians.rasterize import (
                                       GaussianRenderResult,
                                       quaternion_to_matrix,
                                       render_gaussians,
                                       rgb_to_sh,
                                       sh_basis,
)

__all__ = ["BoundGaussians", "WorldGaussians", "GaussianRenderResult", "matrix_to_quaternion", "quaternion_multiply",
           "quaternion_to_matrix", "render_gaussians", "rgb_to_sh", "sh_basis", "triangle_frames"]
