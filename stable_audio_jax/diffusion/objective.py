"""What a diffusion model is trained to predict, and at which times: the training side of
`sampling_config.OBJECTIVES`.

    "v"               the paper's (arXiv 2402.04825, section 3.3): cosine schedule
                      `x_t = cos(pi t/2) x0 + sin(pi t/2) noise`, target `v = alpha noise - sigma x0`
    "rectified_flow"  `x_t = (1 - t) x0 + t noise`, target `noise - x0` (`flow.py`)
    "rf_denoiser"     trained exactly like rectified_flow (stable-audio-tools 0.0.19
                      `training/diffusion.py` treats the two alike); few-step models use it

Times come from `timestep_sampler` ("uniform" is stratified over the batch, see
`schedule.sample_training_times`; the others are `flow.TIMESTEP_SAMPLERS`' maps of normal
draws), then the optional length-dependent `flow.DistributionShift`, for either objective,
as in the reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from stable_audio_jax.diffusion import flow, schedule
from stable_audio_jax.diffusion.sampling_config import is_flow
from stable_audio_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class TrainingObjective:
    objective: str = "v"
    timestep_sampler: str = "uniform"
    mean_logsnr: float = -1.2  # log_snr only
    std_logsnr: float = 2.0
    shift: flow.DistributionShift | None = None

    def __post_init__(self):
        is_flow(self.objective)  # raises on an unknown objective
        flow.check_timestep_sampler(self.timestep_sampler)
        if self.std_logsnr <= 0:
            raise UserError(f"diffusion.std_logsnr must be > 0, got {self.std_logsnr}")

    @classmethod
    def from_config(cls, objective: str, diffusion: Mapping[str, Any]) -> "TrainingObjective":
        """From a config's `model.objective` and its `diffusion` section (`timestep_sampler`,
        `mean_logsnr`, `std_logsnr`, `distribution_shift` with `enabled` and the
        `flow.DistributionShift` fields; each optional)."""
        shift = dict(diffusion.get("distribution_shift") or {})
        enabled = shift.pop("enabled", False)
        unknown = sorted(set(shift) - {f.name for f in dataclasses.fields(flow.DistributionShift)})
        if unknown:
            raise UserError(f"unknown config.diffusion.distribution_shift fields {unknown}")
        return cls(
            objective=objective,
            timestep_sampler=diffusion.get("timestep_sampler", "uniform"),
            mean_logsnr=float(diffusion.get("mean_logsnr", -1.2)),
            std_logsnr=float(diffusion.get("std_logsnr", 2.0)),
            shift=flow.DistributionShift(**shift) if enabled else None,
        )

    def times(self, rng: jax.Array, batch_size: int, frames: int) -> jax.Array:
        """Training times `[batch_size]` in [0, 1] for latents of `frames` frames."""
        if self.timestep_sampler == "uniform":
            t = schedule.sample_training_times(rng, batch_size)
        else:
            t = flow.times_from_draws(
                jax.random.normal(rng, (batch_size,)),
                self.timestep_sampler,
                mean_logsnr=self.mean_logsnr,
                std_logsnr=self.std_logsnr,
            )
        return t if self.shift is None else self.shift(t, frames)

    def noised_and_target(self, x0: jax.Array, noise: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(x_t, target)` for clean latents `x0` and `noise` `[batch, frames, channels]`, `t` `[batch]`."""
        if is_flow(self.objective):
            return flow.add_noise(x0, noise, t), flow.velocity_target(x0, noise)
        return schedule.add_noise(x0, noise, t), schedule.v_target(x0, noise, t)
