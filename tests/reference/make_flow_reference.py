"""Writes tests/fixtures/flow_reference.npz for tests/test_flow_parity.py.

Run once, with the PyTorch reference (stable-audio-tools 0.0.19, torch 2.13 CPU), from the
repository root:

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_flow_reference.py

Everything comes from stable-audio-tools' own functions in `inference/sampling.py`:
`sample_rf` with each `sampler_type` (euler, rk4, dpmpp, pingpong; from noise with sigma_max 1
and from init data with sigma_max 0.6), `DistributionShift.time_shift`,
`sample_timesteps_logsnr` and `truncated_logistic_normal_rescaled`. The training arrays follow
`training/diffusion.py: DiffusionCondTrainingWrapper.training_step` for the "rectified_flow"
objective (`alphas, sigmas = 1 - t, t`, target `noise - x0`, MSE), written out here on the
analytic model because that method needs a whole Lightning module around it. The velocity model
is analytic, `v(x, t) = tanh(x @ W + t b)` on `x` `[batch, frames, channels]`, so JAX computes
the same function. Pingpong's `torch.randn_like` is replaced by a pre-drawn noise sequence, one
slice per step, which the JAX sampler takes through `noise=`.

Stored arrays (float32):
  W [4, 4], b [4]; x_noise [2, 16, 4], init [2, 16, 4], step_noise [STEPS, 2, 16, 4]
  <sampler>_from_noise, <sampler>_from_init [2, 16, 4] for each sampler
  grid_logsnr_1, grid_logsnr_06 [STEPS + 1]: sample_rf's time grid for sigma_max 1 and 0.6
  shift_t [7], shift_<L>, shift_sine_<L> [7]: DistributionShift on t for L latent frames
  draws_<sampler> [64], times_<sampler> [64]: the normal draws and the reference's times
  x0, noise [3, 16, 4], train_t [3], x_t, target [3, 16, 4], loss (scalar, MSE of v(x_t, t))
"""

from __future__ import annotations

import os

import numpy as np
import torch
from predrawn_noise import PreDrawnRandnLike  # tests/reference/, the script's own folder
from stable_audio_tools.inference import sampling

FIXTURES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
OUT = os.path.join(FIXTURES, "flow_reference.npz")
STEPS = 8
SHAPE = (2, 16, 4)
SAMPLERS = ("euler", "rk4", "dpmpp", "pingpong")
SHIFT_LENGTHS = (256, 1024, 4096)
NUM_DRAWS = 64


class TanhVelocity(torch.nn.Module):
    """`v = tanh(x @ W + t b)`, `x` `[batch, frames, channels]`, `t` `[batch]`."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w + t[:, None, None] * self.b)


def run_sample_rf(
    model, sampler: str, noise: torch.Tensor, init: torch.Tensor | None, sigma_max: float, step_noise: torch.Tensor
) -> torch.Tensor:
    randn_like = PreDrawnRandnLike(step_noise)
    original = sampling.torch.randn_like
    sampling.torch.randn_like = randn_like
    try:
        result = sampling.sample_rf(
            model, noise, init_data=init, steps=STEPS, sampler_type=sampler, sigma_max=sigma_max, device="cpu"
        )
    finally:
        sampling.torch.randn_like = original
    assert randn_like.calls == (STEPS if sampler == "pingpong" else 0)
    return result


def sample_rf_grid(sigma_max: float) -> torch.Tensor:
    """The grid `sample_rf` builds, recovered by running it with a recording Euler."""
    recorded = {}

    def record(model, x, sigmas=None, **kwargs):
        recorded["t"] = sigmas.clone()
        return x

    original = sampling.sample_discrete_euler
    sampling.sample_discrete_euler = record
    try:
        sampling.sample_rf(
            None, torch.zeros(SHAPE), steps=STEPS, sampler_type="euler", sigma_max=sigma_max, device="cpu"
        )
    finally:
        sampling.sample_discrete_euler = original
    return recorded["t"]


def timestep_draws(name: str, gen_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(draws, times)`: the reference's times for `name` and the normals it drew for them
    (the global torch generator is re-seeded so the draws can be repeated)."""
    torch.manual_seed(gen_seed)
    draws = torch.randn(NUM_DRAWS)
    torch.manual_seed(gen_seed)
    if name == "logit_normal":  # training_step's inline formula
        times = torch.sigmoid(torch.randn(NUM_DRAWS))
    elif name == "trunc_logit_normal":  # training_step flips the distribution
        times = 1 - sampling.truncated_logistic_normal_rescaled(NUM_DRAWS)
    elif name == "log_snr":
        times = sampling.sample_timesteps_logsnr(NUM_DRAWS, mean_logsnr=-1.2, std_logsnr=2.0)
    else:
        raise ValueError(name)
    return draws, times


@torch.no_grad()
def main() -> None:
    gen = torch.Generator().manual_seed(0)
    w = 0.6 * torch.randn(SHAPE[-1], SHAPE[-1], generator=gen)
    b = torch.randn(SHAPE[-1], generator=gen)
    model = TanhVelocity(w, b)
    x_noise = torch.randn(SHAPE, generator=gen)
    init = torch.randn(SHAPE, generator=gen)
    step_noise = torch.randn((STEPS,) + SHAPE, generator=gen)
    out = {"W": w, "b": b, "x_noise": x_noise, "init": init, "step_noise": step_noise, "steps": torch.tensor(STEPS)}
    for sampler in SAMPLERS:
        out[f"{sampler}_from_noise"] = run_sample_rf(model, sampler, x_noise, None, 1.0, step_noise)
        out[f"{sampler}_from_init"] = run_sample_rf(model, sampler, x_noise, init, 0.6, step_noise)
    out["grid_logsnr_1"], out["grid_logsnr_06"] = sample_rf_grid(1.0), sample_rf_grid(0.6)

    shift_t = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.7, 0.95, 1.0])
    out["shift_t"] = shift_t
    for length in SHIFT_LENGTHS:
        out[f"shift_{length}"] = sampling.DistributionShift().time_shift(shift_t, length)
        out[f"shift_sine_{length}"] = sampling.DistributionShift(use_sine=True).time_shift(shift_t, length)

    for seed, name in enumerate(("logit_normal", "trunc_logit_normal", "log_snr")):
        out[f"draws_{name}"], out[f"times_{name}"] = timestep_draws(name, 100 + seed)

    # training_step for "rectified_flow": alphas, sigmas = 1 - t, t; x_t = x0 alphas + noise
    # sigmas; targets = noise - x0; MSE of the model output (the wrapper's default loss).
    x0 = torch.randn((3,) + SHAPE[1:], generator=gen)
    noise = torch.randn((3,) + SHAPE[1:], generator=gen)
    t = torch.rand(3, generator=gen)
    alphas, sigmas = (1 - t)[:, None, None], t[:, None, None]
    x_t = x0 * alphas + noise * sigmas
    target = noise - x0
    loss = torch.nn.functional.mse_loss(model(x_t, t), target)
    out.update(x0=x0, noise=noise, train_t=t, x_t=x_t, target=target, loss=loss)

    np.savez(OUT, **{k: v.numpy() for k, v in out.items()})
    print(f"{OUT}: {os.path.getsize(OUT)} bytes")
    for sampler in SAMPLERS:
        print(
            sampler,
            "max |x| from noise",
            float(out[f"{sampler}_from_noise"].abs().max()),
            "from init",
            float(out[f"{sampler}_from_init"].abs().max()),
        )


if __name__ == "__main__":
    main()
