"""MMVDM: MVP4D's multi-view video diffusion transformer (MVP4D §3.1, §3.3, S2.2, Fig. S9).

CogVideoX-2B's diffusion transformer with the text encoder removed, built from diffusers' own blocks
(``CogVideoXBlock``: adaLN-zero, q/k LayerNorm, GELU MLP; ``Timesteps`` + ``TimestepEmbedding``; the
``AdaLayerNorm`` output head), imported, never copied.

Inputs (latent resolution ``h x w``, ``F`` latent frames, ``C = 16`` latent channels):

- ``latents (B, V, F, 16, h, w)``: noisy latents of V views; latents that are given (reference views / frames in
  modes 2-4) enter clean, marked by the b mask channel of ``cond``. The model just consumes the latent ++
  conditioning concatenation; samplers and trainers decide what is clean.
- ``cond (B, V, F, C_cond, h, w)``: conditioning in ``morph4d.conditioning.maps.ConditioningLayout`` (59 channels).
- ``ref_latent (B, 16, h, w)``, ``ref_cond (B, C_cond, h, w)``: the reference image and its conditioning.
- ``timestep (B,)``: diffusion timestep, embedded as in CogVideoX and applied through every block's adaLN.

Output ``(B, V, F, 16, h, w)``: the model's prediction (eps / v / x0 is decided by the diffusion wrapper).

Token sequence (one joint attention over all of it, MVP4D S2.2): latent ++ conditioning is patchified with
``patch_size x patch_size`` patches by one convolution; the reference's ``(h/p)(w/p)`` tokens come first, then
the views, view-major, then frame, row, column: ``N = (1 + V F) (h/p) (w/p)`` tokens. Positions (MVP4D §3.1):
CogVideoX's 3D sinusoidal table (temporal D/4 ++ spatial 3D/4), the same for every view; the reference gets
the spatial part plus a learned temporal embedding (D/4 values). Attention runs through
``scaled_dot_product_attention`` (flash / memory-efficient kernels: no N x N score matrix) with the
entropy-preserving scale of ``attention_scale``.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_3d_sincos_pos_embed
from diffusers.models.normalization import AdaLayerNorm
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock, CogVideoXTransformer3DModel
from safetensors.torch import load_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from morph4d.errors import Morph4DError
from morph4d.io import config_from_json, load_state_strict, load_weights, save_weights
from morph4d.validate import read_json

COGVIDEOX_TOKENS = 13 * 32 * 32  # N_t: CogVideoX's default 49 frames (13 latent) at 512 px (MVP4D §3.3)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class MMVDMConfig:
    """Architecture of the MMVDM; ``asdict`` of it is ``config.json``. Defaults = the ``small`` preset."""
    num_layers: int = 6
    num_attention_heads: int = 5
    attention_head_dim: int = 64
    time_embed_dim: int = 128                        # width of the timestep embedding feeding every adaLN
    latent_channels: int = 16                        # CogVideoX VAE latents; also the output channels
    conditioning_channels: int = 59  # ConditioningLayout().num_channels of the default ConditioningConfig (a
                                     # test checks they agree; models sit below conditioning)
    reference_projection: bool = False  # ours (issue 17): the conditioning layout with the encoded reference
                                        # projection (conditioning.maps.layout_of); conditioning_channels 76
    patch_size: int = 2                              # latent pixels per token side (MVP4D S2.2: 2x2)
    base_tokens: int | None = COGVIDEOX_TOKENS       # N_t of the attention scale; None: plain 1/sqrt(d)
    spatial_interpolation_scale: float = 1.875       # CogVideoX-2B's sinusoidal position scales
    temporal_interpolation_scale: float = 1.0
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True                     # CogVideoX's timestep sinusoid layout
    freq_shift: int = 0
    # not architecture: the SNR shift of the noise schedule the weights were trained with (morph4d.diffusion.schedule),
    # kept here so that it travels with them and every sampler uses the same schedule; CogVideoX-2B's: 3
    snr_shift_scale: float = 3.0

    def __post_init__(self):
        if self.inner_dim % 16:  # the 3D table splits D into D/4 temporal + 3D/4 spatial, each in sin/cos halves
            raise Morph4DError(f"num_attention_heads x attention_head_dim must be divisible by 16, got {self.inner_dim}")
        if min(self.num_layers, self.latent_channels, self.patch_size, self.time_embed_dim) < 1 \
                or self.conditioning_channels < 0:
            raise Morph4DError(f"invalid MMVDM config: {self}")
        if self.snr_shift_scale <= 0:
            raise Morph4DError(f"snr_shift_scale must be > 0, got {self.snr_shift_scale}")
        if self.base_tokens is not None and self.base_tokens < 2:
            raise Morph4DError(f"base_tokens must be >= 2 (its log divides) or None, got {self.base_tokens}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def num_tokens(self, views: int, frames: int, height: int, width: int) -> int:
        """Tokens of one item: ``(1 + views * frames) * (height / p) * (width / p)`` (latent frames and size)."""
        return (1 + views * frames) * (height // self.patch_size) * (width // self.patch_size)

    @classmethod
    def preset(cls, name: str, **overrides) -> "MMVDMConfig":
        if name not in PRESETS:
            raise Morph4DError(f"unknown MMVDM preset {name!r}; expected one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)


PRESETS = {
    # tests: 2 layers, 2 heads x 8; runs on 8x8 latents in milliseconds
    "tiny": MMVDMConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, time_embed_dim=16),
    # the embedded default, trainable on a 2-core CPU at 64-128 px (8-16 latents): 10.6 M parameters, shipped
    # in bfloat16 (21 MB) so that it and the small autoencoder (5.7 M, float32) stay under 50 MB
    "small": MMVDMConfig(),
    # CogVideoX-2B's transformer: 30 layers, 30 heads x 64, time embedding 512 (1.686 B parameters)
    "paper": MMVDMConfig(num_layers=30, num_attention_heads=30, attention_head_dim=64, time_embed_dim=512),
}


def attention_scale(num_tokens: int, head_dim: int, base_tokens: int | None) -> float:
    """Softmax logit scale for a sequence of ``num_tokens`` tokens (Jin et al. 2023; MVP4D §3.3).

    ``sqrt(log N_i / log N_t) / sqrt(d)``, with N_i = ``num_tokens`` and N_t = ``base_tokens``; equals the usual
    ``1 / sqrt(d)`` at N_i = N_t (and everywhere when ``base_tokens`` is None).
    """
    # MVP4D §3.3 prints the factor as sqrt(1/d) * sqrt(log N_t / log N_i), which SHRINKS as the token count
    # grows. Jin et al. (the paper it cites) show that attention entropy grows with log N at a fixed scale and
    # compensate with sqrt(log_{N_t} N_i / d) = sqrt(log N_i / log N_t) / sqrt(d), which GROWS with N_i:
    # sharper logits over more tokens keep the entropy level. The printed inverse would flatten attention
    # further exactly on the long sequences the scaling is meant to help (8 views x 49 frames at 512 px =
    # 107,520 tokens vs N_t = 13,312), so we implement the growing form; tests/test_mmvdm.py measures the
    # entropy staying level as N grows.
    if base_tokens is None:
        return head_dim ** -0.5
    return math.sqrt(math.log(num_tokens) / math.log(base_tokens) / head_dim)


def _frame0_time_embedding(inner_dim: int) -> torch.Tensor:
    """The temporal (first D/4) part of CogVideoX's position table at latent frame 0: ``(D/4,)``."""
    return get_3d_sincos_pos_embed(inner_dim, 1, 1)[0, 0, : inner_dim // 4].float()


class EntropyScaledAttnProcessor:
    """Processor for the ``Attention`` inside diffusers' ``CogVideoXBlock``: joint self-attention over the
    block's two streams (here the text stream is empty) with q/k LayerNorm, through
    ``F.scaled_dot_product_attention`` at the scale ``attention_scale(N, d, base_tokens)``, N = whole sequence."""

    def __init__(self, base_tokens: int | None):
        self.base_tokens = base_tokens

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None or image_rotary_emb is not None:
            raise ValueError("the MMVDM attends over all tokens with sinusoidal positions: no mask, no rotary "
                             "embedding expected")
        n_text = encoder_hidden_states.shape[1]
        x = torch.cat([encoder_hidden_states, hidden_states], 1) if n_text else hidden_states  # (B, N, D)
        q, k, v = (proj(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # (B, heads, N, d)
                   for proj in (attn.to_q, attn.to_k, attn.to_v))
        # CogVideoX's per-head LayerNorm on queries and keys (float32 under autocast: back to v's dtype)
        q, k = attn.norm_q(q).to(v.dtype), attn.norm_k(k).to(v.dtype)
        scale = attention_scale(x.shape[1], q.shape[-1], self.base_tokens)
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # On real training batches PyTorch's CPU flash-attention kernel in bfloat16 made a whole small-MMVDM
            # step ~5x slower than float32's (torch.profiler: 88% of the step in its backward; not reproduced with
            # random inputs, so benchmarks/bench_precision.py cannot show it); attention is a small share of the
            # FLOPs here: float32 under CPU autocast
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale).to(v.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, heads, N, d)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2)))  # (B, N, D)
        return out[:, n_text:], out[:, :n_text]


class MMVDM(nn.Module):
    """The multi-view video diffusion transformer; see the module docstring for inputs and token order."""

    def __init__(self, config: MMVDMConfig = MMVDMConfig(), generator: torch.Generator | None = None):
        super().__init__()
        self.config = cfg = config
        D, p = cfg.inner_dim, cfg.patch_size
        # 1. patch embedding over latent ++ conditioning channels (MVP4D S2.2, Fig. S9)
        self.patch_embed = nn.Conv2d(cfg.latent_channels + cfg.conditioning_channels, D, p, stride=p)
        # 2. learned temporal position of the reference tokens (MVP4D §3.1); the D/4 temporal slot of the table
        self.reference_time_embedding = nn.Parameter(torch.empty(D // 4))
        # 3. timestep embedding (CogVideoX): sinusoid of width D -> MLP -> time_embed_dim
        self.time_proj = Timesteps(D, cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(D, cfg.time_embed_dim, "silu")
        # 4. CogVideoX-2B blocks (attention bias on, as in CogVideoXTransformer3DModel) with our processor
        self.transformer_blocks = nn.ModuleList(
            CogVideoXBlock(D, cfg.num_attention_heads, cfg.attention_head_dim, cfg.time_embed_dim,
                           attention_bias=True, norm_eps=cfg.norm_eps)
            for _ in range(cfg.num_layers))
        processor = EntropyScaledAttnProcessor(cfg.base_tokens)
        for block in self.transformer_blocks:
            block.attn1.set_processor(processor)
        # 5. output head (CogVideoX): LayerNorm, adaLN, linear to p x p x 16 per token
        self.norm_final = nn.LayerNorm(D, cfg.norm_eps)
        self.norm_out = AdaLayerNorm(cfg.time_embed_dim, output_dim=2 * D, norm_elementwise_affine=True,
                                     norm_eps=cfg.norm_eps, chunk_dim=1)
        self.proj_out = nn.Linear(D, p * p * cfg.latent_channels)
        self.gradient_checkpointing = False  # recompute each block in backward (runtime switch, not config)
        if not self.proj_out.weight.is_meta:
            self.reset_parameters(generator or torch.Generator().manual_seed(0))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """DiT's initialisation for training from scratch (Peebles & Xie 2023, §3.2 "adaLN-Zero"): Xavier-uniform
        linear and patch weights, N(0, 0.02) timestep MLP, zero biases, and zero adaLN modulations and output
        projection, so every block starts as the identity and the prediction as 0. The reference's temporal
        embedding starts at the table's frame-0 value. ``from_cogvideox`` replaces all of this."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1), generator=generator)
                nn.init.zeros_(m.bias)
        for lin in (self.time_embedding.linear_1, self.time_embedding.linear_2):
            nn.init.normal_(lin.weight, std=0.02, generator=generator)
        zeroed = [self.norm_out.linear, self.proj_out]
        zeroed += [n.linear for b in self.transformer_blocks for n in (b.norm1, b.norm2)]
        for lin in zeroed:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        with torch.no_grad():
            self.reference_time_embedding.copy_(_frame0_time_embedding(self.config.inner_dim))

    # -- positions -----------------------------------------------------------------------------------------
    def positional_embeddings(self, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of the reference tokens ``(h*w, D)`` and of one view's tokens ``(frames*h*w, D)``, the same
        for every view (MVP4D §3.1), for latents of ``height x width`` (``h, w`` = that / patch size)."""
        cfg, D = self.config, self.config.inner_dim
        h, w = height // cfg.patch_size, width // cfg.patch_size
        table = get_3d_sincos_pos_embed(D, (w, h), frames, cfg.spatial_interpolation_scale,
                                        cfg.temporal_interpolation_scale, device=self.reference_time_embedding.device)
        table = table.to(self.reference_time_embedding.dtype)  # (F, h*w, D) = [temporal D/4 | spatial 3D/4]
        reference = torch.cat([self.reference_time_embedding.expand(h * w, -1), table[0, :, D // 4 :]], -1)
        return reference, table.flatten(0, 1)

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, latents: torch.Tensor, cond: torch.Tensor, ref_latent: torch.Tensor, ref_cond: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
        """Prediction ``(B, V, F, 16, h, w)``; bf16 autocast on CUDA, float32 elsewhere."""
        self._check_inputs(latents, cond, ref_latent, ref_cond, timestep)
        on_cuda = latents.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext():
            out = self._forward(latents, cond, ref_latent, ref_cond, timestep)
        return out.to(latents.dtype)

    def _forward(self, latents, cond, ref_latent, ref_cond, timestep):
        B, V, F, C, H, W = latents.shape
        p, D = self.config.patch_size, self.config.inner_dim
        h, w = H // p, W // p
        # 1. tokens: latent ++ conditioning, 2x2 patches; reference first, then view, frame, row, column
        x = self.patch_embed(torch.cat([latents, cond], 3).flatten(0, 2))  # (B*V*F, D, h, w)
        x = x.flatten(2).transpose(1, 2).reshape(B, V, F * h * w, D)  # (B, V, F*h*w, D)
        r = self.patch_embed(torch.cat([ref_latent, ref_cond], 1)).flatten(2).transpose(1, 2)  # (B, h*w, D)
        pos_ref, pos_view = self.positional_embeddings(F, H, W)
        x = x + pos_view.to(x.dtype)  # broadcast over B and V: every view gets the same table
        seq = torch.cat([r + pos_ref.to(r.dtype), x.flatten(1, 2)], 1)  # (B, N, D)
        # 2. timestep embedding (CogVideoX): the sinusoid carries no weights and is float32
        temb = self.time_embedding(self.time_proj(timestep).to(seq.dtype))  # (B, time_embed_dim)
        # 3. blocks; the text stream of CogVideoXBlock stays empty (0 tokens): all tokens are one joint sequence
        empty = seq[:, :0]  # (B, 0, D)
        for block in self.transformer_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                seq, empty = checkpoint(block, seq, empty, temb, use_reentrant=False)
            else:
                seq, empty = block(seq, empty, temb)
        # 4. head and unpatchify (the reference tokens are not predicted)
        seq = self.proj_out(self.norm_out(self.norm_final(seq), temb=temb))  # (B, N, p*p*C)
        out = seq[:, h * w :].reshape(B, V, F, h, w, C, p, p)
        return out.permute(0, 1, 2, 5, 3, 6, 4, 7).reshape(B, V, F, C, H, W)

    def _check_inputs(self, latents, cond, ref_latent, ref_cond, timestep) -> None:
        cfg = self.config
        if latents.ndim != 6:
            raise ValueError(f"latents must be (B, V, F, C, h, w), got shape {tuple(latents.shape)}")
        B, V, F, C, H, W = latents.shape
        Cc, p = cfg.conditioning_channels, cfg.patch_size
        if C != cfg.latent_channels:
            raise ValueError(f"latents must have {cfg.latent_channels} channels (B, V, F, {cfg.latent_channels}, h, w),"
                             f" got shape {tuple(latents.shape)}")
        if min(B, V, F) < 1:
            raise ValueError(f"latents need at least one item, view and latent frame, got shape {tuple(latents.shape)}")
        if H % p or W % p:
            raise ValueError(f"latent height and width must be divisible by patch_size={p}, got {H}x{W}")
        if cond.shape != (B, V, F, Cc, H, W):
            raise ValueError(f"cond must be (B, V, F, C_cond, h, w) = {(B, V, F, Cc, H, W)} with C_cond = "
                             f"{Cc} channels of the model's conditioning layout (morph4d.conditioning.maps."
                             f"ConditioningLayout), got {tuple(cond.shape)}")
        if ref_latent.shape != (B, C, H, W) or ref_cond.shape != (B, Cc, H, W):
            raise ValueError(f"ref_latent must be {(B, C, H, W)} and ref_cond {(B, Cc, H, W)} (one reference latent "
                             f"and its conditioning per item), got {tuple(ref_latent.shape)} and "
                             f"{tuple(ref_cond.shape)}")
        if timestep.shape != (B,):
            raise ValueError(f"timestep must be ({B},): one timestep per item, got {tuple(timestep.shape)}")

    # -- weights: config.json + model.safetensors ---------------------------------------------------------
    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> None:
        """``config.json`` + ``model.safetensors``; ``dtype`` stores the weights at that precision."""
        save_weights(path, "MMVDM", asdict(self.config), self.state_dict(), dtype)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "MMVDM":
        """Rebuild from ``save_pretrained``'s folder and load strictly."""
        raw, state = load_weights(path, "MMVDM", {f.name for f in fields(MMVDMConfig)})
        config = config_from_json(MMVDMConfig, raw, str(Path(path) / CONFIG_NAME))
        return cls._from_state_dict(config, state, device, dtype, Path(path))

    def extended(self, **config_changes) -> "MMVDM":
        """This model with more conditioning channels appended at the end of the patch embedding's input (the
        layout's last group, e.g. ``reference_projection=True, conditioning_channels=76``), their weights zero:
        the new model computes exactly this one's function until training moves them (the same start as
        ``from_cogvideox``'s conditioning channels). Fewer channels are refused: dropping inputs changes the
        function."""
        config = replace(self.config, **config_changes)
        extra = config.conditioning_channels - self.config.conditioning_channels
        if extra < 0 or replace(config, conditioning_channels=self.config.conditioning_channels,
                                reference_projection=self.config.reference_projection) != self.config:
            raise Morph4DError(f"a model can only gain conditioning channels at the end of its input: "
                               f"{self.config.conditioning_channels} -> {config.conditioning_channels} channels "
                               f"with the same architecture otherwise")
        state = dict(self.state_dict())
        w = state["patch_embed.weight"]
        state["patch_embed.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], 1)
        p = next(self.parameters())
        return self._from_state_dict(config, state, p.device, p.dtype, "the extended model")

    @classmethod
    def _from_state_dict(cls, config, state, device, dtype, source) -> "MMVDM":
        with torch.device("meta"):
            model = cls(config)
        load_state_strict(model, state, f"weights in {source}")
        return model.to(device=device, dtype=dtype)

    @classmethod
    def from_cogvideox(cls, root: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                       **overrides) -> "MMVDM":
        """Initialise from a local diffusers CogVideoX-2B folder (``root/transformer/config.json`` + safetensors).

        Blocks, norms, timestep embedding and output head are loaded as they are; the patch embedding's 16
        latent input channels are copied and the conditioning channels zero-initialised (the model starts out
        computing CogVideoX's function of the latents); the text projection and text position slots are dropped;
        the reference's temporal embedding starts at frame 0's. ``overrides``: other ``MMVDMConfig`` fields
        (e.g. ``conditioning_channels``, ``base_tokens``)."""
        folder = Path(root) / "transformer"
        config_file, single = folder / CONFIG_NAME, folder / "diffusion_pytorch_model.safetensors"
        index = folder / "diffusion_pytorch_model.safetensors.index.json"
        if not config_file.is_file() or not (single.is_file() or index.is_file()):
            raise Morph4DError(f"{root} is not a local diffusers CogVideoX folder: expected {config_file} and "
                               f"{single} (or {index} with its shards)")
        signature = inspect.signature(CogVideoXTransformer3DModel.__init__).parameters.values()
        dc = {p.name: p.default for p in signature if p.default is not p.empty}  # keys a config may omit
        dc.update(read_json(config_file))
        expected = {"in_channels": 16, "out_channels": 16, "patch_size_t": None, "ofs_embed_dim": None,
                    "use_rotary_positional_embeddings": False, "use_learned_positional_embeddings": False,
                    "attention_bias": True, "activation_fn": "gelu-approximate", "timestep_activation_fn": "silu",
                    "norm_elementwise_affine": True, "patch_bias": True}
        wrong = {k: dc[k] for k, v in expected.items() if dc[k] != v}
        if wrong:
            raise Morph4DError(f"expected a CogVideoX-2B-style transformer ({expected}); {config_file} has {wrong}")
        config = MMVDMConfig(**{
            "num_layers": dc["num_layers"], "num_attention_heads": dc["num_attention_heads"],
            "attention_head_dim": dc["attention_head_dim"], "time_embed_dim": dc["time_embed_dim"],
            "patch_size": dc["patch_size"], "spatial_interpolation_scale": dc["spatial_interpolation_scale"],
            "temporal_interpolation_scale": dc["temporal_interpolation_scale"], "norm_eps": dc["norm_eps"],
            "flip_sin_to_cos": dc["flip_sin_to_cos"], "freq_shift": dc["freq_shift"], **overrides})
        shards = [single] if single.is_file() else \
            sorted({folder / f for f in read_json(index).get("weight_map", {}).values()})
        state = {}
        for shard in shards:
            state.update(load_file(shard))
        proj_w = state.pop("patch_embed.proj.weight")  # (D, 16, p, p)
        patch_w = proj_w.new_zeros(proj_w.shape[0], config.latent_channels + config.conditioning_channels,
                                   *proj_w.shape[2:])
        patch_w[:, : proj_w.shape[1]] = proj_w  # latent channels copied, conditioning channels zero
        state["patch_embed.weight"], state["patch_embed.bias"] = patch_w, state.pop("patch_embed.proj.bias")
        for key in [k for k in state if k.startswith("patch_embed.text_proj.")]:
            del state[key]  # no text encoder (MVP4D §3.1)
        state["reference_time_embedding"] = _frame0_time_embedding(config.inner_dim)
        return cls._from_state_dict(config, state, device, dtype, folder)
