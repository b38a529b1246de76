"""The sampling settings of a diffusion model, with the one set of defaults every path uses.

A model carries its settings (a training config's `sampling` section, a pretrained
directory's `config.json`); `AudioGenerator` fills what a model leaves out from
`SamplingConfig`'s defaults, and `launch/sample.py`'s flags override single fields.

    SamplingConfig()                                   # the defaults below
    SamplingConfig.from_dict({"cfg_scale": 7.0})       # a model's partial settings, checked
    SAO = SamplingConfig(cfg_scale=7.0, sigma_min=0.3)  # Stable Audio Open's release settings
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from stable_audio_jax.diffusion.samplers import canonical_sampler_name


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How a model samples: `steps` of `sampler` over the polyexponential sigma schedule from
    `sigma_max` to `sigma_min`, classifier-free guidance `cfg_scale` (1: off) with CFG
    rescale `rescale_phi` in [0, 1] (0: off, the k-diffusion default)."""

    steps: int = 100
    cfg_scale: float = 6.0
    sampler: str = "dpmpp_3m_sde"
    sigma_min: float = 0.03
    sigma_max: float = 500.0
    rescale_phi: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "sampler", canonical_sampler_name(self.sampler))  # raises on an unknown name
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"sampling steps must be a whole number >= 1, got {self.steps}")
        if self.cfg_scale < 0:
            raise ValueError(f"sampling cfg_scale must be >= 0, got {self.cfg_scale}")
        if not 0.0 <= self.rescale_phi <= 1.0:
            raise ValueError(f"sampling rescale_phi must be in [0, 1], got {self.rescale_phi}")
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"sampling needs 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}")

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any] | None) -> "SamplingConfig":
        """A model's settings (any subset of the fields; the rest are the defaults)."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown sampling settings {unknown}; the fields are "
                             f"{[f.name for f in dataclasses.fields(cls)]}")
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
