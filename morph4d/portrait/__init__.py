"""IM-Portrait (stage 8c; CVPR 2025): 3D-aware talking-head video as multiplane images (REFERENCE.md §2).

Owns: ``mpi`` (the multiplane-image representation and its renderer: planes between r - 0.15 and r + 0.05,
per-plane homography warps, over-compositing, depth / disparity from the same weights; a differentiable torch
reference and a numba fast path; side-view and stereo cameras) and ``objective`` (L_mpi / L_side with the
supplement's terms and weights, condition dropout, the two training stages' parameters) and ``train``
(``morph4d train-mpi``: the resumable two-stage loop on our datasets) and ``sample`` (one clip by DDIM with
the two guidance scales). Its network lives in
``models.portrait_unet``, its conditioning maps in ``conditioning.uvmaps``; its schedule is
``diffusion``'s.

May import: foundation, heads, mesh, models, conditioning, data, diffusion, training (its checkpoint and log
helpers); a sibling of generation (neither imports the other); never generation, tracking, avatar, eval,
pipeline or ``morph4d.cli``.
"""
