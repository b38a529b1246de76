"""The evaluation embedders at their public sizes, for `launch/benchmark.py` only (random weights):

    python launch/benchmark.py --config=configs/embedders.py --batch_size=8 --steps=3

OpenL3 mel256 / 512-d (the paper's FD_openl3) and PaSST-S (the AudioSet tagger of KL_passt);
see `stable_audio_jax/benchmark/embedder_rows.py` for what the rows measure.
"""

import dataclasses

import ml_collections

from stable_audio_jax import config_lib
from stable_audio_jax.models.openl3 import OpenL3Config
from stable_audio_jax.models.passt import PaSSTConfig


def get_config():
    c = config_lib.base_config()
    c.task = "embedders"
    c.embedders = ml_collections.ConfigDict()
    c.embedders.names = ("openl3", "passt")
    c.embedders.openl3 = dataclasses.asdict(OpenL3Config())
    c.embedders.passt = dataclasses.asdict(PaSSTConfig())
    return c
