"""Neural networks and their folders (stage 3, MVP4D §3.1; IM-Portrait's network).

Owns: the MMVDM (``mmvdm``: MVP4D's multi-view video diffusion transformer on CogVideoX-2B blocks), IM-Portrait's
space-time U-Net (``portrait_unet``: colour and geometry branches, MPI outputs), the
video autoencoders (``vae``), the latent geometry every stage sizes latents by (``latent``: 8x spatial,
4x temporal, 16 channels, 1 + 4k frames), model folders and the embedded default (``folder``) and
``morph4d model init | pack`` (``cli``).

Import the submodules (this package file stays empty so that ``models.latent`` does not load
diffusers).

May import: foundation only (the MMVDM's conditioning channel count is a constructor argument; a test
checks its default against ``conditioning.maps``).
"""
