"""The video autoencoder's latent geometry, in one place: every stage that sizes a latent asks here.

CogVideoX's 3D VAE (and our small autoencoders, which keep its layout) downsamples 8x in space and 4x in
time after the first frame: a video of F = 1 + 4k frames at H x W becomes 1 + k latent frames of
``LATENT_CHANNELS`` x H/8 x W/8 (MVP4D §3.1). Frame 0 and the last frame of each group of 4 are the "kept"
frames whose head-model conditioning the MMVDM sees (MVP4D S2.1).
"""

from __future__ import annotations

from morph4d.errors import Morph4DError

LATENT_CHANNELS = 16    # CogVideoX's latent channels
LATENT_FACTOR = 8       # the video autoencoder's spatial downsampling (CogVideoX)
TEMPORAL_FACTOR = 4     # ... and temporal: frame 0 alone, then groups of 4


def check_frame_count(num_frames: int) -> None:
    """Raise ``Morph4DError`` unless ``num_frames`` = 1 + 4k."""
    if num_frames < 1 or (num_frames - 1) % TEMPORAL_FACTOR:
        raise Morph4DError(f"got {num_frames} frames; video frame counts must be 1 + 4k (1, 5, 9, ..., 49, ...) "
                           f"because the video autoencoder keeps frame 0 and compresses each following group "
                           f"of 4 frames into one latent frame")


def kept_frames(num_frames: int) -> list[int]:
    """Frames whose conditioning is kept: 0 and the last of each group of 4 (49 -> 0, 4, ..., 48)."""
    check_frame_count(num_frames)
    return list(range(0, num_frames, TEMPORAL_FACTOR))


def latent_frames(num_frames: int) -> int:
    """Latent frames of a video of ``num_frames`` (1 + 4k) frames: 1 + k."""
    return len(kept_frames(num_frames))


__all__ = ["LATENT_CHANNELS", "LATENT_FACTOR", "TEMPORAL_FACTOR", "check_frame_count", "kept_frames", "latent_frames"]
