"""The diffusion formulation shared by training and generation (stage 6).

Owns: ``schedule`` (Diffusion: CogVideoX's noise schedule, v/eps parameterisation and its paired loss,
the schedule an MMVDM was trained with) and ``sampling`` (DDIM as a pure function over a denoiser, the
generation-mode masks of MVP4D §3.3, classifier-free / multi-view guidance and MVP4D §4's angular scales as
denoiser wrappers).

May import: foundation, ``heads``, ``mesh``, ``models``, ``conditioning``, ``data``.
"""
