"""Mesh rasterization (stage 2): geometry -> pixels for every triangle mesh in the project.

Owns: the rasterizer (``raster``: numba fast path + torch reference twin -> ``RasterResult``, ``interpolate``)
and preview shading (``shade``). Used by the conditioning maps (MVP4D §3.2), the synthetic data renderer and
the demo's previews. The Gaussian avatar's splatting rasterizer is ``morph4d.avatar.gaussians.rasterize``.

May import: the foundation modules (``morph4d.cameras``, ``io``, ...) and ``morph4d.heads``.
"""
