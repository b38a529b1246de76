"""Writes tests/fixtures/sampler_reference.npz for tests/test_sampler_parity.py.

Run once, with the PyTorch reference (k-diffusion 0.1.1, as used by stable-audio-tools
0.0.19's `sample_k`; torch 2.13 CPU), from the repository root:

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_sampler_reference.py

The network is a small analytic v-model that JAX computes identically,
`v(x, t) = tanh(x @ W + t b)` on `x` `[batch, frames, channels]`, wrapped in k-diffusion's
`VDenoiser`, exactly as `sample_k` wraps the DiT. The stochastic samplers get a noise sampler
that returns a pre-drawn noise tensor per step instead of their Brownian tree or fresh
normals, so the JAX samplers can be fed the same sequence. The last step (to sigma = 0) draws
no noise, so the last noise slice is never used; dpm_fast, which takes
`len(dpm_fast_orders(STEPS))` = STEPS // 3 + 1 steps on its own grid and draws noise on every
one of them, uses the first that many slices.

Stored arrays (float32):
  W [4, 4], b [4]; noise [STEPS, 2, 16, 4]
  probe_x [2, 16, 4], probe_sigmas [5], probe_t [5], probe_denoised [5, 2, 16, 4]:
    `VDenoiser` outputs at single noise levels, and its sigma -> t map
  for each schedule name S in SCHEDULES ("sao": sigma 0.3..500, the model card's;
  "default": 0.01..100, `sample_k`'s):
    S_sigmas [STEPS + 1]   `get_sigmas_polyexponential(STEPS, sigma_min, sigma_max, rho=1)`
    S_x_init [2, 16, 4]    standard normal times S_sigmas[0], as `sample_k` scales it
    S_<sampler> [2, 16, 4] result of k-diffusion `sample_<sampler>` for every name in
                           SAMPLERS, each as `sample_k` calls it (the SDE samplers with
                           eta 1 (midpoint for 2M), the ancestral ones with eta 1,
                           dpm_fast with (sigma_min, sigma_max, STEPS) and eta 0)
    S_<sampler>_<variant>  the same with the options in VARIANTS (noise where eta > 0)
    S_lms_coeffs [STEPS, 4]  `linear_multistep_coeff` of each step (0 past its order)
  plus the scalars steps, S_sigma_min, S_sigma_max.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from k_diffusion import external, sampling

FIXTURES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
OUT = os.path.join(FIXTURES, "sampler_reference.npz")
STEPS = 12
SHAPE = (2, 16, 4)
SCHEDULES = {"sao": (0.3, 500.0), "default": (0.01, 100.0)}
DETERMINISTIC = ("dpmpp_2m", "heun", "lms", "dpm_2")
STOCHASTIC = ("dpmpp_2m_sde", "dpmpp_3m_sde", "euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral")
SAMPLERS = DETERMINISTIC + STOCHASTIC + ("dpm_fast",)
# Non-default options: name -> (sampler, options); each takes the pre-drawn noise.
VARIANTS = {
    "dpmpp_2s_ancestral_eta05": ("dpmpp_2s_ancestral", {"eta": 0.5, "s_noise": 0.7}),
    "dpm_fast_eta1": ("dpm_fast", {"eta": 1.0, "s_noise": 1.0}),
}
LMS_ORDER = 4


class TanhVModel(torch.nn.Module):
    """`v = tanh(x @ W + t b)`, `x` `[batch, frames, channels]`, `t` `[batch]`."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w + t[:, None, None] * self.b)


class PreDrawnNoise:
    """k-diffusion noise sampler that hands out `noise[i]` at step i, in call order."""

    def __init__(self, noise: torch.Tensor, sigmas: torch.Tensor | None):
        self.noise, self.sigmas, self.calls = noise, sigmas, 0

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        i = self.calls
        if self.sigmas is not None:  # None: dpm_fast, which steps on its own grid
            assert self.sigmas[i] == sigma and self.sigmas[i + 1] == sigma_next, "noise sampler called out of order"
        self.calls += 1
        return self.noise[i]


def run_sampler(
    denoiser,
    sampler: str,
    x_init: torch.Tensor,
    sigmas: torch.Tensor,
    noise: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
    options: dict,
) -> torch.Tensor:
    """k-diffusion's `sample_<sampler>` as `sample_k` calls it, plus `options`; the stochastic
    ones (and dpm_fast with eta > 0) are handed the pre-drawn `noise`."""
    fn = getattr(sampling, f"sample_{sampler}")
    if sampler == "dpm_fast":
        noise_sampler = PreDrawnNoise(noise, None)
        result = fn(denoiser, x_init, sigma_min, sigma_max, STEPS, disable=True, noise_sampler=noise_sampler, **options)
        assert noise_sampler.calls == STEPS // 3 + 1  # called on every step, even at eta 0
        return result
    if sampler in DETERMINISTIC:
        return fn(denoiser, x_init, sigmas, disable=True, **options)
    noise_sampler = PreDrawnNoise(noise, sigmas)
    options = {"eta": 1.0, "s_noise": 1.0, **options}
    result = fn(denoiser, x_init, sigmas, disable=True, noise_sampler=noise_sampler, **options)
    assert noise_sampler.calls == STEPS - 1
    return result


@torch.no_grad()
def main() -> None:
    gen = torch.Generator().manual_seed(0)
    w = 0.6 * torch.randn(SHAPE[-1], SHAPE[-1], generator=gen)
    b = torch.randn(SHAPE[-1], generator=gen)
    denoiser = external.VDenoiser(TanhVModel(w, b))
    noise = torch.randn((STEPS,) + SHAPE, generator=gen)
    out = {"W": w, "b": b, "noise": noise, "steps": torch.tensor(STEPS)}

    probe_x = 3.0 * torch.randn(SHAPE, generator=gen)
    probe_sigmas = torch.tensor([0.01, 0.3, 1.0, 10.0, 500.0])
    out.update(
        probe_x=probe_x,
        probe_sigmas=probe_sigmas,
        probe_t=denoiser.sigma_to_t(probe_sigmas),
        probe_denoised=torch.stack([denoiser(probe_x, s * torch.ones(SHAPE[0])) for s in probe_sigmas]),
    )

    for name, (sigma_min, sigma_max) in SCHEDULES.items():
        sigmas = sampling.get_sigmas_polyexponential(STEPS, sigma_min, sigma_max, rho=1.0)
        x_init = torch.randn(SHAPE, generator=gen) * sigmas[0]
        out.update(
            {
                f"{name}_sigmas": sigmas,
                f"{name}_x_init": x_init,
                f"{name}_sigma_min": torch.tensor(sigma_min),
                f"{name}_sigma_max": torch.tensor(sigma_max),
            }
        )
        for sampler in SAMPLERS:
            out[f"{name}_{sampler}"] = run_sampler(denoiser, sampler, x_init, sigmas, noise, sigma_min, sigma_max, {})
        for variant, (sampler, options) in VARIANTS.items():
            out[f"{name}_{variant}"] = run_sampler(
                denoiser, sampler, x_init, sigmas, noise, sigma_min, sigma_max, options
            )
        sigmas_np = sigmas.numpy()
        out[f"{name}_lms_coeffs"] = torch.tensor(
            [
                [
                    sampling.linear_multistep_coeff(min(i + 1, LMS_ORDER), sigmas_np, i, j) if j <= i else 0.0
                    for j in range(LMS_ORDER)
                ]
                for i in range(STEPS)
            ],
            dtype=torch.float32,
        )

    np.savez(OUT, **{k: v.numpy() for k, v in out.items()})
    print(f"{OUT}: {os.path.getsize(OUT)} bytes")
    for name in SCHEDULES:
        for sampler in SAMPLERS + tuple(VARIANTS):
            print(name, sampler, "max |x| =", float(out[f"{name}_{sampler}"].abs().max()))


if __name__ == "__main__":
    main()
