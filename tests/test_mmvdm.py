"""MMVDM: tiny real configs (2 layers, 2 heads x 8, 8x8 latents); diffusers' CogVideoX for equivalence."""

import json
import math

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from safetensors.torch import load_file, save_file

from morph4d.conditioning.maps import NUM_CONDITIONING_CHANNELS
from morph4d.models.latent import latent_frames
from morph4d.models.mmvdm import COGVIDEOX_TOKENS, MMVDM, MMVDMConfig, attention_scale

TINY = MMVDMConfig.preset("tiny")


def _perturb(model: MMVDM, seed: int = 1) -> MMVDM:
    """Add N(0, 0.1) to every parameter: the adaLN-zero init makes blocks identities and the output 0, which
    would let most assertions below pass vacuously."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _model(config=TINY, seed=0) -> MMVDM:
    return _perturb(MMVDM(config, generator=torch.Generator().manual_seed(seed)), seed + 100)


def _inputs(B=2, V=2, F=3, H=8, W=8, seed=0, cond_channels=NUM_CONDITIONING_CHANNELS):
    g = torch.Generator().manual_seed(seed)
    return dict(latents=torch.randn(B, V, F, 16, H, W, generator=g),
                cond=torch.randn(B, V, F, cond_channels, H, W, generator=g),
                ref_latent=torch.randn(B, 16, H, W, generator=g),
                ref_cond=torch.randn(B, cond_channels, H, W, generator=g),
                timestep=torch.randint(0, 1000, (B,), generator=g).float())


def _attention_twin(x, attn, scale):
    """Readable reference of EntropyScaledAttnProcessor: materialised softmax(q k^T * scale) v."""
    q, k, v = (proj(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
    q, k = attn.norm_q(q), attn.norm_k(k)
    weights = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)  # (B, heads, N, N)
    return attn.to_out[0]((weights @ v).transpose(1, 2).flatten(2))


# -- configs -----------------------------------------------------------------------------------------------
def test_presets_parameter_counts():
    counts = {}
    for name in ("tiny", "small"):
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in MMVDM(MMVDMConfig.preset(name)).parameters())
    assert counts == {"tiny": 20_212, "small": 10_629_840}
    assert MMVDMConfig() == MMVDMConfig.preset("small")
    with pytest.raises(ValueError, match="unknown MMVDM preset"):
        MMVDMConfig.preset("huge")
    with pytest.raises(ValueError, match="divisible by 16"):
        MMVDMConfig(num_attention_heads=3, attention_head_dim=8)


def test_paper_config_on_meta_device():
    """CogVideoX-2B's transformer (1,693,783,872 parameters in diffusers' default config) minus its text projection
    (4096 x 1920 + 1920 = 7,866,240) plus the conditioning input channels of the patch embedding (59 x 2 x 2 x 1920
    = 453,120) plus the reference's learned temporal embedding (1920 / 4 = 480) = 1,686,371,232."""
    paper = MMVDMConfig.preset("paper")
    with torch.device("meta"):
        ours = MMVDM(paper)
        cogvideox = CogVideoXTransformer3DModel()  # diffusers' defaults are CogVideoX-2B's
    n_ours = sum(p.numel() for p in ours.parameters())
    n_cog = sum(p.numel() for p in cogvideox.parameters())
    text = sum(p.numel() for p in cogvideox.patch_embed.text_proj.parameters())
    assert (n_cog, text) == (1_693_783_872, 7_866_240)
    assert n_ours == n_cog - text + NUM_CONDITIONING_CHANNELS * 2 * 2 * 1920 + 1920 // 4 == 1_686_371_232
    # 8 views x 49 frames at 512 px: 13 latent frames of 64 x 64 latents, 2x2 patches
    assert paper.num_tokens(8, latent_frames(49), 512 // 8, 512 // 8) == (1 + 8 * 13) * 32 * 32 == 107_520


# -- the model as a function -----------------------------------------------------------------------------------
def test_output_shape_and_determinism():
    inputs = _inputs()
    a, b = _model(seed=0), _model(seed=0)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(MMVDM(TINY, generator=torch.Generator().manual_seed(1)).patch_embed.weight,
                           MMVDM(TINY, generator=torch.Generator().manual_seed(0)).patch_embed.weight)
    with torch.no_grad():
        out = a(**inputs)
        assert out.shape == (2, 2, 3, 16, 8, 8) and out.dtype == torch.float32
        assert torch.equal(out, a(**inputs)) and torch.equal(out, b(**inputs))
        assert out.abs().max() > 1e-3


def test_initial_prediction_is_zero():
    """adaLN-zero init (DiT): every block is the identity and the output projection is 0."""
    with torch.no_grad():
        out = MMVDM(TINY, generator=torch.Generator().manual_seed(0))(**_inputs())
    assert torch.equal(out, torch.zeros_like(out))


def test_batch_vs_single():
    model, inputs = _model(), _inputs(B=3)
    with torch.no_grad():
        batched = model(**inputs)
        for i in range(3):
            single = model(**{k: v[i : i + 1] for k, v in inputs.items()})
            torch.testing.assert_close(single, batched[i : i + 1], rtol=1e-5, atol=1e-6)


def test_views_share_positions_so_swapping_views_swaps_outputs():
    """Views get the same positional table and one joint attention: the model is equivariant to view order,
    while every view still sees the others (changing view 1 changes view 0's output)."""
    model, inputs = _model(), _inputs(B=1, V=3)
    perm = torch.tensor([2, 0, 1])
    swapped = {**inputs, "latents": inputs["latents"][:, perm], "cond": inputs["cond"][:, perm]}
    changed = {**inputs, "latents": inputs["latents"].clone()}
    changed["latents"][:, 1] += 1.0
    with torch.no_grad():
        out = model(**inputs)
        torch.testing.assert_close(model(**swapped), out[:, perm], rtol=1e-5, atol=1e-6)
        assert (model(**changed)[:, 0] - out[:, 0]).abs().max() > 1e-4
        for key in ("ref_latent", "ref_cond", "cond"):  # the reference and the conditioning reach the views
            other = {**inputs, key: inputs[key] + 1.0}
            assert (model(**other) - out).abs().max() > 1e-4, key


def test_positional_embeddings_layout():
    model = _model()
    D, F, hw = TINY.inner_dim, 3, 4 * 4  # 8x8 latents -> 4x4 tokens per frame
    ref, view = model.positional_embeddings(F, 8, 8)
    assert ref.shape == (hw, D) and view.shape == (F * hw, D)
    view = view.reshape(F, hw, D)
    assert not torch.equal(view[0], view[1])  # frames differ (temporal part)
    assert torch.equal(view[0, :, D // 4 :], view[1, :, D // 4 :])  # ... and share the spatial part
    torch.testing.assert_close(ref[:, D // 4 :], view[0, :, D // 4 :])  # the reference: same spatial sinusoid
    assert torch.equal(ref[:, : D // 4], model.reference_time_embedding.expand(hw, -1))  # learned temporal part


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = _inputs()
    grads = []
    for checkpointing in (False, True):
        model = _model()
        model.gradient_checkpointing = checkpointing
        latents = inputs["latents"].clone().requires_grad_()
        model(**{**inputs, "latents": latents}).square().mean().backward()
        grads.append([latents.grad] + [p.grad for p in model.parameters()])
    assert all(g is not None for g in grads[1])
    for plain, ckpt in zip(*grads):
        torch.testing.assert_close(ckpt, plain, rtol=1e-5, atol=1e-7)
    assert grads[0][0].abs().max() > 0


def test_bf16_autocast_cpu_twin_of_the_cuda_path():
    """The CUDA path runs the blocks under bf16 autocast; the same modules under CPU bf16 autocast must run
    (attention processor dtype handling) and stay close to float32."""
    model, inputs = _model(), _inputs()
    with torch.no_grad():
        full = model(**inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(**inputs)
    assert half.dtype == torch.float32 and full.abs().max() > 0
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 autocast path)")
def test_cuda_bf16_autocast_matches_cpu():
    model, inputs = _model(), _inputs()
    with torch.no_grad():
        cpu = model(**inputs)
        gpu = model.to("cuda")(**{k: v.to("cuda") for k, v in inputs.items()})
    assert gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0.05, atol=0.05)


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, match", [
    (lambda x: {**x, "latents": x["latents"][0]}, r"\(B, V, F, C, h, w\)"),                       # no batch axis
    (lambda x: {**x, "latents": x["latents"][:, :, :, :8]}, "16 channels"),                     # latent channels
    (lambda x: {**x, "cond": x["cond"][:, :, :, :58]}, "59 channels of the model's conditioning layout"),
    (lambda x: {**x, "cond": x["cond"][:, :, :2]}, "C_cond"),                                    # frame mismatch
    (lambda x: {**x, "latents": x["latents"][:, :, :0], "cond": x["cond"][:, :, :0]}, "at least one"),
    (lambda x: {**x, "latents": x["latents"][..., :7], "cond": x["cond"][..., :7]}, "patch_size=2"),
    (lambda x: {**x, "ref_cond": x["ref_cond"][:, :58]}, "ref_cond"),
    (lambda x: {**x, "ref_latent": x["ref_latent"][:1]}, "ref_latent"),
    (lambda x: {**x, "timestep": x["timestep"][:1]}, "one timestep per item"),
])
def test_bad_inputs_raise_value_error(change, match):
    with pytest.raises(ValueError, match=match):
        _model()(**change(_inputs()))


# -- weights ---------------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    model, inputs = _model(), _inputs()
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model"] == "MMVDM" and cfg["num_layers"] == 2 and cfg["base_tokens"] == COGVIDEOX_TOKENS
    loaded = MMVDM.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), model(**inputs))
    # strict: a missing tensor or another config is an error
    weights = load_file(tmp_path / "m" / "model.safetensors")
    del weights["proj_out.bias"]
    save_file(weights, tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match="proj_out.bias"):
        MMVDM.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="config.json and .*model.safetensors"):
        MMVDM.from_pretrained(tmp_path / "nothing")


# -- attention -----------------------------------------------------------------------------------------------
def test_attention_scale_formula():
    d = 64
    assert attention_scale(COGVIDEOX_TOKENS, d, COGVIDEOX_TOKENS) == pytest.approx(d ** -0.5)
    assert attention_scale(1000, d, None) == d ** -0.5
    # the growing form: 8 views x 49 frames (107,520 tokens) gets sharper logits than CogVideoX's 13,312
    assert attention_scale(107_520, d, COGVIDEOX_TOKENS) == pytest.approx(
        math.sqrt(math.log(107_520) / math.log(13_312)) / 8) and attention_scale(107_520, d, COGVIDEOX_TOKENS) > 1 / 8


def test_processor_matches_materialised_attention_forward_and_backward():
    """The SDPA path (no score matrix) against a readable twin, values and gradients."""
    attn = _model().transformer_blocks[0].attn1
    x = torch.randn(2, 40, TINY.inner_dim, generator=torch.Generator().manual_seed(0), requires_grad=True)
    scale = attention_scale(40, TINY.attention_head_dim, COGVIDEOX_TOKENS)
    assert abs(scale - TINY.attention_head_dim ** -0.5) > 0.05  # the entropy scale is really in play
    fast, empty = attn(x, encoder_hidden_states=x[:, :0])
    twin = _attention_twin(x, attn, scale)
    assert empty.shape == (2, 0, TINY.inner_dim)
    torch.testing.assert_close(fast, twin, rtol=1e-5, atol=1e-6)
    g_fast, = torch.autograd.grad(fast.square().sum(), x)
    g_twin, = torch.autograd.grad(twin.square().sum(), x)
    torch.testing.assert_close(g_fast, g_twin, rtol=1e-4, atol=1e-6)


def _mean_entropy(q, k, scale):
    """Mean entropy (nats) of the softmax attention rows of queries q over keys k."""
    weights = torch.softmax(q @ k.T * scale, dim=-1)
    return -(weights * weights.clamp_min(1e-30).log()).sum(-1).mean().item()


@pytest.mark.parametrize("logit_std", [6.0, 2.0])
def test_attention_entropy_stays_level_as_tokens_grow(logit_std):
    """Jin et al. 2023: at a fixed logit scale attention entropy grows with the token count; the growing scale
    sqrt(log N / log N_t) / sqrt(d) keeps it level.

    Queries of fixed norm and N(0, I) keys in d = 64 give N(0, logit_std^2) logits at N = N_t = 1024 tokens.
    - sharp attention (logit_std 6, above the sqrt(2 log N_t) = 3.7 at which softmax concentrates on a few
      keys, as trained attention does): from N to 16 N the entropy stays within 0.2 nats with the scale (the
      rest is the slow log-log drift of Gaussian extremes), under a third of its growth without it;
    - diffuse attention (logit_std 2): without the scale the entropy grows like log N (+log 4 per 4x); no
      scale can hold it at one value here (almost every key shares the weight), and the scale keeps the
      entropy a constant fraction of its maximum log N instead.
    """
    g, d, base = torch.Generator().manual_seed(0), 64, 1024
    q = torch.randn(512, d, generator=g)
    q = q / q.norm(dim=-1, keepdim=True) * logit_std * math.sqrt(d)  # q.k / sqrt(d) ~ N(0, logit_std^2)
    sizes = [base, 4 * base, 16 * base]
    plain, scaled = [], []
    for n in sizes:
        k = torch.randn(n, d, generator=g)
        plain.append(_mean_entropy(q, k, attention_scale(n, d, None)))
        scaled.append(_mean_entropy(q, k, attention_scale(n, d, base)))
    assert plain[0] == pytest.approx(scaled[0])  # same scale at N = N_t
    if logit_std > math.sqrt(2 * math.log(base)):
        assert plain[2] - plain[0] > 0.4
        assert max(scaled) - min(scaled) < min(0.2, (plain[2] - plain[0]) / 3)
    else:
        for a, b in zip(plain, plain[1:]):
            assert b - a == pytest.approx(math.log(4), rel=0.1)
        fraction = [h / math.log(n) for h, n in zip(scaled, sizes)]
        assert max(fraction) - min(fraction) < 0.015
        assert plain[2] / math.log(sizes[2]) - plain[0] / math.log(sizes[0]) > 0.05


# -- CogVideoX initialisation --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cogvideox(tmp_path_factory):
    """A random tiny diffusers CogVideoX-2B-style transformer saved with save_pretrained."""
    with torch.random.fork_rng():
        torch.manual_seed(0)  # diffusers initialises from the global generator; fork_rng keeps it local
        model = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, num_layers=2,
                                            time_embed_dim=16, text_embed_dim=8, sample_width=8, sample_height=8,
                                            sample_frames=9).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("cogvideox")
    model.save_pretrained(root / "transformer")
    return root, model


def test_from_cogvideox_blocks_compute_what_diffusers_blocks_compute(tiny_cogvideox):
    """Text removal: CogVideoXBlock keeps a separate text stream with its own adaLN shift/scale/gate; we pass it
    0 tokens, so the block's attention and MLP run over our joint sequence alone and the text modulations touch
    nothing. diffusers' block is run the same way (0 text tokens, its own CogVideoXAttnProcessor2_0). With
    base_tokens = the sequence length the entropy scale is exactly 1 / sqrt(d), CogVideoX's, so the blocks must
    agree to float rounding."""
    root, cog = tiny_cogvideox
    n = 40
    ours = MMVDM.from_cogvideox(root, base_tokens=n)
    assert ours.config.num_layers == 2 and ours.config.time_embed_dim == 16
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, n, 16, generator=g)
    temb = torch.randn(2, 16, generator=g)
    with torch.no_grad():
        for mine, theirs in zip(ours.transformer_blocks, cog.transformer_blocks):
            a, _ = mine(hidden, hidden[:, :0], temb)
            b, _ = theirs(hidden, hidden[:, :0], temb)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            hidden = b
        # timestep embedding and output head are CogVideoX's
        t = torch.tensor([3.0, 700.0])
        temb = ours.time_embedding(ours.time_proj(t))
        torch.testing.assert_close(temb, cog.time_embedding(cog.time_proj(t)))
        torch.testing.assert_close(ours.proj_out(ours.norm_out(ours.norm_final(hidden), temb=temb)),
                                   cog.proj_out(cog.norm_out(cog.norm_final(hidden), temb=temb)))


def test_from_cogvideox_patch_embedding_and_state(tiny_cogvideox):
    root, cog = tiny_cogvideox
    ours = MMVDM.from_cogvideox(root)
    theirs = cog.state_dict()
    for k, v in ours.state_dict().items():
        if k in theirs:
            assert torch.equal(v, theirs[k]), k
    skipped = {k for k in theirs if k not in ours.state_dict()}
    assert skipped == {"patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.text_proj.weight",
                       "patch_embed.text_proj.bias"}
    # the latent channels are CogVideoX's patch embedding; the conditioning channels start at zero
    g = torch.Generator().manual_seed(0)
    latent, cond = torch.randn(3, 16, 8, 8, generator=g), torch.randn(3, NUM_CONDITIONING_CHANNELS, 8, 8, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours.patch_embed(torch.cat([latent, cond], 1)), cog.patch_embed.proj(latent))
    assert torch.equal(ours.patch_embed.weight[:, 16:], torch.zeros_like(ours.patch_embed.weight[:, 16:]))
    # the reference's learned temporal embedding starts at latent frame 0's sinusoid
    torch.testing.assert_close(ours.reference_time_embedding, ours.positional_embeddings(1, 8, 8)[1][0, :4])


def test_from_cogvideox_reads_sharded_checkpoints(tmp_path, tiny_cogvideox):
    root, cog = tiny_cogvideox
    cog.save_pretrained(tmp_path / "transformer", max_shard_size="20KB")
    assert (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    sharded, single = MMVDM.from_cogvideox(tmp_path), MMVDM.from_cogvideox(root)
    for k, v in single.state_dict().items():
        assert torch.equal(sharded.state_dict()[k], v), k


def test_from_cogvideox_rejects_bad_folders(tmp_path, tiny_cogvideox):
    expected = "transformer/config.json and .*transformer/diffusion_pytorch_model.safetensors"
    with pytest.raises(ValueError, match=expected):
        MMVDM.from_cogvideox(tmp_path)
    root, cog = tiny_cogvideox
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(
        (root / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes())
    config = json.loads((root / "transformer" / "config.json").read_text())
    rotary = {**config, "use_rotary_positional_embeddings": True}
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(rotary))
    with pytest.raises(ValueError, match="CogVideoX-2B-style"):
        MMVDM.from_cogvideox(tmp_path)
