"""Training the MMVDM and the video autoencoder (stage 7, MVP4D §3.3, Table 3, S2.2).

Owns: ``curriculum`` (frozen presets paper/small/tiny and the per-step random choices), ``train`` (the
MMVDM loop, checkpoints, bf16 autocast), ``train_vae`` (the small autoencoder) and their commands
(``cli``: ``morph4d train``, ``morph4d train-vae``). A run folder's format (config.json, checkpoint,
log.csv, samples) is written and read here only.

May import: every stage below it (foundation ... ``diffusion``); never ``generation`` or above.
"""
