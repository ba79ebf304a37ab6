"""Neural networks: the MMVDM (MVP4D's multi-view video diffusion transformer) and the video autoencoders."""

from morph4d.models.mmvdm import MMVDM, PRESETS, EntropyScaledAttnProcessor, MMVDMConfig, attention_scale
from morph4d.models.vae import (VAE_PRESETS, CausalVAEConfig, CausalVideoAutoencoder, CogVideoXAutoencoder,
                                VideoAutoencoder, from_vae_layout, latent_shape, to_vae_layout)

__all__ = ["MMVDM", "PRESETS", "EntropyScaledAttnProcessor", "MMVDMConfig", "attention_scale", "VAE_PRESETS",
           "CausalVAEConfig", "CausalVideoAutoencoder", "CogVideoXAutoencoder", "VideoAutoencoder",
           "from_vae_layout", "latent_shape", "to_vae_layout"]
