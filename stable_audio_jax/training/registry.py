"""Task name (`config.task`) -> Task class."""

from __future__ import annotations

import ml_collections

from stable_audio_jax.training.arc_task import ARCTask
from stable_audio_jax.training.clap_task import CLAPTask
from stable_audio_jax.training.diffusion_task import DiffusionTask
from stable_audio_jax.training.task import Task
from stable_audio_jax.training.vae_task import VAETask

TASKS: dict[str, type[Task]] = {"vae": VAETask, "clap": CLAPTask, "diffusion": DiffusionTask, "arc": ARCTask}


def build_task(config: ml_collections.ConfigDict) -> Task:
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r} in config.task; known: {sorted(TASKS)}")
    return TASKS[config.task](config)
