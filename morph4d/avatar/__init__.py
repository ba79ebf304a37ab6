"""The 4D Gaussian avatar (stage 9, MVP4D S2.4, §4): fit, animate, render, export, view.

Owns: ``gaussians/`` (the splatting rasterizer, mesh-bound Gaussians, density control, off-mesh seeding,
deformation U-Net, losses, .ply), ``model`` (Avatar and the avatar folder, avatar.safetensors), ``fit``
(the 4D fit and its resumable checkpoint), ``render`` (an avatar driven by any animation -> frames / MP4),
``animated`` (the .m4da file, docs/AVATAR_FORMAT.md), ``viewer/`` (export folders and the WebGL viewer)
and ``cli`` (``morph4d fit | render | export | view``).

May import: foundation ... ``diffusion`` and ``generation`` (to read generated videos through
``generation.videos``); never ``training``, ``eval`` or above.
"""
