"""Video autoencoders: the layout permutation, our causal VAE, and the diffusers CogVideoX wrapper."""

import json
from dataclasses import replace

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from morph4d.models.vae import (
    VAE_PRESETS,
    CausalVAEConfig,
    CausalVideoAutoencoder,
    CogVideoXAutoencoder,
    from_vae_layout,
    latent_shape,
    to_vae_layout,
)


def _video(B, V, F, H, W, seed=0):
    return torch.rand(B, V, F, 3, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["tiny", "tiny_patch"])
def tiny_vae(request):
    """Both architectures: the conv pyramid and the patch autoencoder (PCA-initialised when trained)."""
    return CausalVideoAutoencoder(VAE_PRESETS[request.param], generator=torch.Generator().manual_seed(0))


def _tiny_cogvideox_vae(num_blocks=4):
    """A random diffusers CogVideoX VAE with the real layout: 4 blocks = 3 spatial halvings (8x) and 2 temporal
    ones (4x; REFERENCE §5: 2 blocks would halve time only once)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)  # diffusers initialises from the global generator; fork_rng keeps it local
        return AutoencoderKLCogVideoX(block_out_channels=(8,) * num_blocks,
                                      down_block_types=("CogVideoXDownBlock3D",) * num_blocks,
                                      up_block_types=("CogVideoXUpBlock3D",) * num_blocks, layers_per_block=1,
                                      norm_num_groups=4, latent_channels=16, sample_height=32, sample_width=32).eval()


# -- layout ------------------------------------------------------------------------------------------------
def test_layout_round_trip_and_element_mapping():
    x = torch.randn(2, 3, 5, 4, 6, 7)  # (B, V, F, C, H, W)
    y = to_vae_layout(x)
    assert y.shape == (6, 4, 5, 6, 7)  # (B*V, C, F, H, W)
    assert torch.equal(y[1 * 3 + 2, 3, 4], x[1, 2, 4, 3])  # item b*V + v, channel c, frame f
    assert torch.equal(from_vae_layout(y, 2), x)
    with pytest.raises(ValueError, match=r"\(B, V, F, C, H, W\)"):
        to_vae_layout(x[0])
    with pytest.raises(ValueError, match="B = 4"):
        from_vae_layout(y, 4)


# -- our causal VAE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [1, 5, 9])
def test_causal_vae_shapes(tiny_vae, frames):
    video = _video(2, 2, frames, 16, 32)
    with torch.no_grad():
        z = tiny_vae.encode(video)
        out = tiny_vae.decode(z)
    assert z.shape == latent_shape(2, 2, frames, 16, 32) == (2, 2, (frames - 1) // 4 + 1, 16, 2, 4)
    assert out.shape == video.shape
    assert out.min() >= 0 and out.max() <= 1


def test_causal_vae_is_causal_and_images_encode_like_frame_0(tiny_vae):
    video = _video(1, 2, 9, 16, 16)
    later = video.clone()
    later[:, :, 5:] = torch.rand(later[:, :, 5:].shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, z_later = tiny_vae.encode(video), tiny_vae.encode(later)
        z_img = tiny_vae.encode_image(video[:, 0, 0])
        out, out_later = tiny_vae.decode(z), tiny_vae.decode(z_later)
    # latent frame i sees frames <= 4i: changing frames 5..8 changes latent 2 only
    torch.testing.assert_close(z[:, :, :2], z_later[:, :, :2], rtol=0, atol=1e-6)
    assert (z[:, :, 2] - z_later[:, :, 2]).abs().max() > 1e-3
    # the decoder is causal too: frames 0..4 come from latents 0..1
    torch.testing.assert_close(out[:, :, :5], out_later[:, :, :5], rtol=0, atol=1e-6)
    torch.testing.assert_close(z_img, z[:, 0, 0], rtol=1e-5, atol=1e-5)


def test_causal_vae_sampling_scaling_and_slicing(tiny_vae):
    video = _video(1, 3, 5, 16, 16)
    with torch.no_grad():
        mean = tiny_vae.encode(video)
        torch.testing.assert_close(tiny_vae.encode(video, slice_size=3), mean, rtol=1e-5, atol=1e-6)
        s1 = tiny_vae.encode(video, generator=torch.Generator().manual_seed(5))
        s2 = tiny_vae.encode(video, generator=torch.Generator().manual_seed(5))
        assert torch.equal(s1, s2) and not torch.allclose(s1, mean)
        scaled = CausalVideoAutoencoder(replace(tiny_vae.config, scaling_factor=2.0))
        scaled.load_state_dict(tiny_vae.state_dict())
        torch.testing.assert_close(scaled.encode(video), 2 * mean)
        torch.testing.assert_close(scaled.decode(2 * mean), tiny_vae.decode(mean))


def test_causal_vae_save_load_round_trip(tiny_vae, tmp_path):
    tiny_vae.save_pretrained(tmp_path / "vae")
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert cfg["model"] == "CausalVideoAutoencoder" and cfg["architecture"] == tiny_vae.config.architecture
    loaded = CausalVideoAutoencoder.from_pretrained(tmp_path / "vae")
    assert loaded.config == tiny_vae.config
    for k, v in tiny_vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    video = _video(1, 1, 5, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(video), tiny_vae.encode(video))
    # strict: weights of another config are rejected
    CausalVideoAutoencoder(CausalVAEConfig(channels=(8, 8, 8), norm_groups=4)).save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((tmp_path / "vae" / "config.json").read_text())
    with pytest.raises(ValueError, match="do not match"):
        CausalVideoAutoencoder.from_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="config.json and .*model.safetensors"):
        CausalVideoAutoencoder.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("shape, match", [
    ((1, 1, 4, 3, 16, 16), "1 \\+ 4k"),          # frame count breaks 1 + 4k
    ((1, 1, 5, 3, 12, 16), "divisible by 8"),    # size not a multiple of 8
    ((1, 1, 5, 4, 16, 16), "\\(B, V, F, 3, H, W\\)"),  # 4 channels
    ((1, 5, 3, 16, 16), "\\(B, V, F, 3, H, W\\)"),     # no view axis
])
def test_bad_video_inputs(tiny_vae, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_vae.encode(torch.rand(shape))


def test_bad_latent_inputs(tiny_vae):
    with pytest.raises(ValueError, match="16, h, w"):
        tiny_vae.decode(torch.randn(1, 1, 2, 8, 2, 2))
    with pytest.raises(ValueError):
        CausalVAEConfig(channels=(8, 8))


def test_patch_pca_init_is_the_optimal_linear_code():
    """After init_patch_pca the patch autoencoder reconstructs exactly the projection of every (4 frames x 8 x 8
    px) patch on its 16 principal components, and the latent channels are whitened."""
    from morph4d.models.vae import _from_patches, _to_patches
    g = torch.Generator().manual_seed(0)
    low = torch.rand(2, 2, 5, 3, 4, 4, generator=g)          # smooth videos: upsampled 4x4 noise + detail
    video = (torch.nn.functional.interpolate(low.flatten(0, 2), scale_factor=4, mode="bilinear").unflatten(0, (2, 2, 5))
             + 0.05 * torch.rand(2, 2, 5, 3, 16, 16, generator=g)).clamp(0, 1)
    vae = CausalVideoAutoencoder(VAE_PRESETS["tiny_patch"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = ((vae.decode(vae.encode(video), clamp=False) - video) ** 2).mean()
        vae.init_patch_pca(video)
        z = vae.encode(video)
        recon = vae.decode(z, clamp=False)
    p = _to_patches(to_vae_layout(video * 2 - 1)).movedim(1, -1).reshape(-1, 768).double()
    mean = p.mean(0)
    comps = torch.linalg.svd(p - mean, full_matrices=False)[2][:16]
    proj = ((p - mean) @ comps.T @ comps + mean).float().reshape(4, 2, 2, 2, 768).movedim(-1, 1)
    expected = from_vae_layout(_from_patches(proj), 2) * 0.5 + 0.5
    torch.testing.assert_close(recon, expected, rtol=0, atol=1e-4)
    assert ((recon - video) ** 2).mean() < 0.2 * before
    torch.testing.assert_close(z.flatten(0, 2).transpose(0, 1).flatten(1).std(1), torch.ones(16), rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="architecture='patch'"):
        CausalVideoAutoencoder(VAE_PRESETS["tiny"]).init_patch_pca(video)


# -- diffusers' CogVideoX VAE --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cogvideox_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogvideox")
    _tiny_cogvideox_vae().save_pretrained(root / "vae")
    return root


@pytest.mark.parametrize("frames", [1, 5, 9, 13])
def test_cogvideox_wrapper_layout(cogvideox_root, frames):
    vae = CogVideoXAutoencoder.from_pretrained(cogvideox_root)
    video = _video(1, 2, frames, 32, 32)
    with torch.no_grad():
        z = vae.encode(video)
        out = vae.decode(z)
        # the wrapper computes diffusers' own encode on the permuted video, times the scaling factor
        raw = vae.vae.encode(video[0].permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mean
    assert z.shape == (1, 2, (frames - 1) // 4 + 1, 16, 4, 4)
    torch.testing.assert_close(z[0], raw.permute(0, 2, 1, 3, 4) * vae.scaling_factor)
    assert vae.scaling_factor == pytest.approx(1.15258426)
    assert out.shape == video.shape  # 1 + 4k frames back, also for even latent counts (5, 13 frames)


def test_cogvideox_even_latent_count_keeps_frame_0_alone(cogvideox_root):
    vae = CogVideoXAutoencoder.from_pretrained(cogvideox_root)
    z = torch.randn(1, 1, 2, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = vae.vae.decode(to_vae_layout(z / vae.scaling_factor)).sample  # diffusers: 8 frames
        out = vae.decode(z, clamp=False)
    assert raw.shape[2] == 8 and out.shape[2] == 5
    for i in range(1, 4):  # latent 0 came back as 4 identical frames; one of them is kept
        torch.testing.assert_close(raw[:, :, i], raw[:, :, 0])
    torch.testing.assert_close(to_vae_layout(out * 2 - 1), torch.cat([raw[:, :, :1], raw[:, :, 4:]], 2))


def test_cogvideox_wrapper_rejects_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="vae/config.json and .*vae/diffusion_pytorch_model.safetensors"):
        CogVideoXAutoencoder.from_pretrained(tmp_path)
    _tiny_cogvideox_vae(num_blocks=3).save_pretrained(tmp_path / "vae")  # 4x spatial: not CogVideoX's layout
    with pytest.raises(ValueError, match="8x spatial"):
        CogVideoXAutoencoder.from_pretrained(tmp_path)


def test_cogvideox_wrapper_tiling(tmp_path):
    """diffusers' default tiles (half its 480 x 720 sample size) keep the layout at 256 px; small tiles come back
    with wrong sizes, which the wrapper reports instead of passing them on."""
    vae = _tiny_cogvideox_vae()
    vae.register_to_config(sample_height=480, sample_width=720)
    vae.save_pretrained(tmp_path / "vae")
    tiled = CogVideoXAutoencoder.from_pretrained(tmp_path, tiling=True)
    assert tiled.vae.use_tiling and tiled.vae.tile_sample_min_height == 240
    video = _video(1, 1, 1, 256, 256)
    with torch.no_grad():
        z = tiled.encode(video)
        assert z.shape == (1, 1, 1, 16, 32, 32) and tiled.decode(z).shape == video.shape
        tiled.vae.enable_tiling(tile_sample_min_height=16, tile_sample_min_width=16)
        with pytest.raises(ValueError, match="expected \\(1, 16, 2, 6, 6\\)"):
            tiled.encode(_video(1, 1, 5, 48, 48))
