"""Conditioning signals (stage 4): MVP4D's head-model maps at latent resolution (MVP4D §3.2, Fig. S9) and
IM-Portrait's UV-coordinate maps at pixel resolution.

Owns: ``maps`` (ConditioningConfig, ConditioningLayout = the channel order the MMVDM reads,
HeadConditioner.reference / .video), ``uvmaps`` (IM-Portrait: UV coordinates + eye / mouth region code,
UVConditioner), ``viz`` (PNG grids of every channel, ``morph4d conditioning``) and
its command (``cli``). The latent geometry the maps are built at (8x spatial, 4x temporal, 1 + 4k frames)
belongs to the autoencoder: ``morph4d.models.latent``.

May import: foundation, ``heads``, ``mesh``, ``models``.
"""
