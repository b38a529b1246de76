"""The sampling settings of a diffusion model, with the one set of defaults every path uses.

A model carries its settings (a training config's `sampling` section, a pretrained
directory's `config.json`); `AudioGenerator` fills what a model leaves out from
`SamplingConfig`'s defaults, and `launch/sample.py`'s flags override single fields.

    SamplingConfig()                                   # the defaults below
    SamplingConfig.from_dict({"cfg_scale": 7.0})       # a model's partial settings, checked
    SAO = SamplingConfig(cfg_scale=7.0, sigma_min=0.3)  # Stable Audio Open's release settings

What a model's output means (`OBJECTIVES`) decides which samplers and ranges apply: a
v-objective model samples with `samplers.SAMPLERS` over sigma in (0, inf); a rectified-flow
model with `flow_samplers.FLOW_SAMPLERS` over t in (0, 1] (`sigma_max` < 1 starts
audio-to-audio part-way). The objective is the model's (`LatentDiffusionConfig.objective`),
passed in, and not part of a config's `sampling` section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from stable_audio_jax.diffusion import flow, flow_samplers
from stable_audio_jax.diffusion.samplers import SAMPLERS, UnknownSamplerError, canonical_sampler_name
from stable_audio_jax.errors import UserError

OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown diffusion objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return objective


def is_flow(objective: str) -> bool:
    """True for the rectified-flow objectives (the model predicts the velocity `noise - x0`)."""
    return check_objective(objective) != "v"


def sampler_names(objective: str) -> tuple[str, ...]:
    """The samplers a model with `objective` can use."""
    return tuple(flow_samplers.FLOW_SAMPLERS) if is_flow(objective) else tuple(SAMPLERS)


def check_known_sampler(name: str) -> None:
    """`UnknownSamplerError` unless some model can use `name` (before a model is loaded)."""
    for objective in ("v", "rectified_flow"):
        try:
            canonical_sampler_for(name, objective)
            return
        except UnknownSamplerError:
            pass
    raise UnknownSamplerError(
        f"unknown sampler {name!r}; v-objective models: {', '.join(sampler_names('v'))}; "
        f"rectified-flow models: {', '.join(sampler_names('rectified_flow'))}"
    )


def canonical_sampler_for(name: str, objective: str) -> str:
    """`name` in canonical spelling, checked against the model's objective: a v-sampler on a
    rectified-flow model (or the reverse) is a `UnknownSamplerError` naming the right list."""
    if is_flow(objective):
        try:
            return flow_samplers.canonical_flow_sampler_name(name)
        except UnknownSamplerError:
            raise UnknownSamplerError(
                f"sampler {name!r} is not one for a rectified-flow model ({objective}); "
                f"choose one of {', '.join(sampler_names(objective))}"
            ) from None
    try:
        return canonical_sampler_name(name)
    except UnknownSamplerError:
        if name.strip().lower() in flow_samplers.FLOW_SAMPLERS:
            raise UnknownSamplerError(
                f"sampler {name!r} is for rectified-flow models; this v-objective model "
                f"samples with one of {', '.join(sampler_names(objective))}"
            ) from None
        raise


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How a model samples: `steps` of `sampler` from `sigma_max` down (v: over the
    polyexponential sigma schedule to `sigma_min`; rectified flow: over the reference's
    log-SNR time grid to 0, `sigma_min` unused), classifier-free guidance `cfg_scale` (1: off)
    with CFG rescale `rescale_phi` in [0, 1] (0: off, the k-diffusion default). `sampler` and
    `sigma_max` default by `objective`: dpmpp_3m_sde from 500 (v), euler from 1 (flow)."""

    steps: int = 100
    cfg_scale: float = 6.0
    sampler: str | None = None
    sigma_min: float = 0.03
    sigma_max: float | None = None
    rescale_phi: float = 0.0
    objective: str = "v"

    def __post_init__(self):
        flow_model = is_flow(self.objective)
        sampler = self.sampler or ("euler" if flow_model else "dpmpp_3m_sde")
        object.__setattr__(self, "sampler", canonical_sampler_for(sampler, self.objective))  # raises on a bad name
        if self.sigma_max is None:
            object.__setattr__(self, "sigma_max", 1.0 if flow_model else 500.0)
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"sampling steps must be a whole number >= 1, got {self.steps}")
        if self.cfg_scale < 0:
            raise ValueError(f"sampling cfg_scale must be >= 0, got {self.cfg_scale}")
        if not 0.0 <= self.rescale_phi <= 1.0:
            raise ValueError(f"sampling rescale_phi must be in [0, 1], got {self.rescale_phi}")
        if flow_model:
            flow.check_sampling_range(int(self.steps), float(self.sigma_max))
        elif not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"sampling needs 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}")

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any] | None, *, objective: str = "v") -> "SamplingConfig":
        """A model's settings (any subset of the fields but `objective`, which is the model's;
        the rest are the defaults)."""
        settings = dict(settings or {})
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "objective"]
        unknown = sorted(set(settings) - set(fields))
        if unknown:
            raise ValueError(f"unknown sampling settings {unknown}; the fields are {fields}")
        return cls(**settings, objective=objective)

    def to_dict(self) -> dict[str, Any]:
        """The settings, without the objective (a config's `sampling` section)."""
        settings = dataclasses.asdict(self)
        del settings["objective"]
        return settings


# Stable Audio Open 1.0's settings (the model card and stable-audio-tools' Gradio defaults
# of the release): CFG 7 over sigma 0.3..500, no rescale.
SAO = SamplingConfig(cfg_scale=7.0, sigma_min=0.3)
# Stable Audio 1.0's: 100 steps and CFG 6 (paper, section 4), the sampler and sigma range of
# stable-audio-tools' `sample_k` defaults, and the CFG rescale 0.4 that
# `generate_diffusion_cond` (rescale_cfg=True) gets from `UNetCFG1d.forward`'s `scale_phi`.
SA1 = SamplingConfig(sampler="dpmpp_2m_sde", sigma_min=0.01, sigma_max=100.0, rescale_phi=0.4)
# The project's diffusion training configs (`config_lib.diffusion_config`): the defaults
# with the paper's CFG rescale.
TRAINING = SamplingConfig(rescale_phi=0.4)
# stable-audio-tools' Gradio defaults (`interface/interfaces/diffusion_cond.py`) for a
# "rectified_flow" model: 50 Euler steps, CFG 7.
FLOW = SamplingConfig(objective="rectified_flow", steps=50, cfg_scale=7.0, sampler="euler")
# ... and for an "rf_denoiser" one, the few-step models (Stable Audio Open Small, ARC
# post-training; arXiv 2505.08175): 8 pingpong steps without CFG.
FEW_STEP_FLOW = SamplingConfig(objective="rf_denoiser", steps=8, cfg_scale=1.0, sampler="pingpong")


def release_defaults(objective: str) -> SamplingConfig:
    """The reference's sampling defaults for a converted DiT of `objective` (SAO for "v")."""
    return {"v": SAO, "rectified_flow": FLOW, "rf_denoiser": FEW_STEP_FLOW}[check_objective(objective)]
