"""The diffusion process of the MMVDM: CogVideoX's noise schedule, the model parameterisation and its
paired training loss, in one place (STYLE habits 3-4).

Schedule (CogVideoX-2B, REFERENCE §3): 1000 training steps, scaled-linear betas 0.00085 -> 0.012, the
cumulative alphas shifted to lower SNR by ``snr_shift_scale`` = 3 and rescaled to zero terminal SNR, trailing
timestep spacing at inference. The arrays come from diffusers' ``CogVideoXDDIMScheduler`` (imported, so
they are exactly CogVideoX's).

Parameterisation: the network predicts ``v`` (CogVideoX's pretrained head) or ``eps``. ``Diffusion.split``
is the only function that turns a network output into (x0, eps); training (``loss``) and sampling both
go through it. With x_t = a x0 + s eps (a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar)):
v = a eps - s x0, so x0 = a x_t - s v and eps = s x_t + a v.

Loss (MVP4D §3.2 "L2 difference between the predicted and ground-truth noise", on the generated latents
only): for ``prediction="eps"`` exactly the L2 of the noise; for ``"v"`` the L2 of v, which equals
CogVideoX's own x0 loss weighted by 1 / (1 - alpha_bar). Latents that are given (reference frames, given
views or frames in modes 2-4) never count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from morph4d.errors import Morph4DError


@dataclass(frozen=True)
class DiffusionConfig:
    prediction: str = "v"              # "v" (CogVideoX) or "eps"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    snr_shift_scale: float = 3.0       # CogVideoX-2B
    zero_terminal_snr: bool = True

    def __post_init__(self):
        if self.prediction not in ("v", "eps"):
            raise Morph4DError(f"prediction must be 'v' or 'eps', got {self.prediction!r}")
        if self.prediction == "eps" and self.zero_terminal_snr:
            raise Morph4DError("eps-prediction cannot recover x0 at zero terminal SNR (alpha_bar_T = 0); use "
                               "prediction='v' or zero_terminal_snr=False")


class Diffusion:
    """Schedule + parameterisation + loss. Timesteps are integer tensors in [0, num_train_timesteps)."""

    def __init__(self, cfg: DiffusionConfig = DiffusionConfig()):
        from diffusers import CogVideoXDDIMScheduler
        self.cfg = cfg
        sched = CogVideoXDDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                                       beta_end=cfg.beta_end, beta_schedule="scaled_linear",
                                       snr_shift_scale=cfg.snr_shift_scale,
                                       rescale_betas_zero_snr=cfg.zero_terminal_snr, timestep_spacing="trailing",
                                       set_alpha_to_one=True, prediction_type="v_prediction"
                                       if cfg.prediction == "v" else "epsilon")
        self.alphas_cumprod = sched.alphas_cumprod.to(torch.float64)  # (T,)
        self._scheduler = sched

    @classmethod
    def for_model(cls, model) -> "Diffusion":
        """The schedule an MMVDM was trained with (its ``config.snr_shift_scale``), other settings CogVideoX's."""
        return cls(DiffusionConfig(snr_shift_scale=model.config.snr_shift_scale))

    def timesteps(self, num_steps: int) -> torch.Tensor:
        """Descending inference timesteps with CogVideoX's trailing spacing (the first is T - 1)."""
        if not 1 <= num_steps <= self.cfg.num_train_timesteps:
            raise Morph4DError(f"num_steps must be in [1, {self.cfg.num_train_timesteps}], got {num_steps}")
        self._scheduler.set_timesteps(num_steps)
        return self._scheduler.timesteps.clone()

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t), shaped to broadcast over ``like``'s (B, ...)."""
        ab = self.alphas_cumprod.to(like.device)[t.long()].to(like.dtype)
        shape = (-1,) + (1,) * (like.dim() - 1)
        return ab.sqrt().reshape(shape), (1 - ab).clamp(min=0).sqrt().reshape(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.coefficients(t, x0)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output."""
        if self.cfg.prediction == "eps":
            return noise
        a, s = self.coefficients(t, x0)
        return a * noise - s * x0

    def split(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output -> (x0, eps). The one conversion of the parameterisation."""
        a, s = self.coefficients(t, x_t)
        if self.cfg.prediction == "eps":
            return (x_t - s * output) / a.clamp(min=1e-8), output
        return a * x_t - s * output, s * x_t + a * output

    def loss(self, output: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
             generate: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the prediction over generated latents only.

        output, x0, noise: (B, V, F, C, h, w); t: (B,); generate: (B, V, F) bool, True where the latent is
        generated (not given). Returns a scalar; zero if nothing is generated.
        """
        if generate.shape != output.shape[:3]:
            raise Morph4DError(f"generate must be (B, V, F) = {tuple(output.shape[:3])}, got {tuple(generate.shape)}")
        err = (output - self.target(x0, noise, t)).square().mean(dim=(-3, -2, -1))  # (B, V, F)
        w = generate.to(err.dtype)
        return (err * w).sum() / w.sum().clamp(min=1.0)
