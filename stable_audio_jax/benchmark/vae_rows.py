"""The VAE rows (`config.task == 'vae'`): encode, decode and the training phases.

Each training phase is jitted as the trainer jits it (state shardings, batch over the data
axes, old state donated); encode and decode run with the initial (random) weights on a
window of `--seconds` rounded up to a valid sample count.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from stable_audio_jax.benchmark.harness import (
    Measurement,
    global_array,
    init_for_benchmark,
    measure_inference,
    measure_train_phase,
    mesh_rules,
)
from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options

VAE_TRAIN_PHASES = ("generator", "discriminator", "generator_warmup")


def vae_window_samples(config: Any, seconds: float) -> int:
    """`seconds` of audio in samples, rounded up to a multiple of the downsampling ratio and to
    at least the largest FFT of the discriminator and of the multi-resolution STFT loss."""
    from stable_audio_jax.models.autoencoder import AutoencoderConfig

    ratio = AutoencoderConfig.from_dict(config.model.to_dict()).downsampling_ratio
    largest_fft = max(max(config.discriminator.n_ffts), max(config.loss.stft.fft_sizes))
    samples = max(math.ceil(seconds * config.data.sample_rate), largest_fft)
    return ratio * -(-samples // ratio)


def vae_param_counts(config: Any) -> dict[str, int]:
    """Parameter counts from `jax.eval_shape` of `VAETask.init_state` (nothing is allocated)."""
    import flax.linen as nn
    import jax

    from stable_audio_jax import parallel
    from stable_audio_jax.training.vae_task import VAETask

    abstract = nn.meta.unbox(jax.eval_shape(VAETask(config).init_state, jax.random.PRNGKey(0)))
    autoencoder = abstract.params["autoencoder"]
    return {
        "autoencoder": parallel.count_params(autoencoder),
        "encoder": parallel.count_params(autoencoder["encoder"]),
        "decoder": parallel.count_params(autoencoder["decoder"]),
        "discriminator": parallel.count_params(abstract.params["discriminator"]),
    }


_VAE_PHASE_DESCRIPTIONS = {
    "generator": "autoencoder update, adversarial + feature-matching losses on (after warm-up)",
    "discriminator": "discriminator update",
    "generator_warmup": "autoencoder update, adversarial + feature-matching losses off (warm-up)",
}


def vae_phase_function(task: Any, phase: str) -> tuple[Callable, str]:
    """`(state, batch) -> (state, metrics)` for one VAE training phase, and its description."""
    if phase not in VAE_TRAIN_PHASES:
        raise BenchmarkUsageError(f"unknown VAE training phase {phase!r}; known: {VAE_TRAIN_PHASES}")
    description = f"{type(task).__name__}.train_phases()[{phase!r}]: " + _VAE_PHASE_DESCRIPTIONS[phase]
    return task.train_phases()[phase], description


def benchmark_vae(config: Any, options: Options, mesh: Any) -> tuple[dict[str, Any], list[Measurement]]:
    """Encode, decode and the requested training phases of the VAE config."""
    import numpy as np

    from stable_audio_jax.training.vae_task import VAETask

    unknown = set(options.train_phases) - set(VAE_TRAIN_PHASES)
    if unknown:
        raise BenchmarkUsageError(f"unknown --train_phases {sorted(unknown)}; known: {VAE_TRAIN_PHASES}")
    rules = mesh_rules(config)
    samples = vae_window_samples(config, options.seconds)
    with config.unlocked():
        config.data.sample_size = samples
        config.data.batch_size = options.batch_size
    task = VAETask(config)
    autoencoder = task.autoencoder
    ratio = autoencoder.config.downsampling_ratio
    sample_rate = config.data.sample_rate
    window_seconds = samples / sample_rate

    rng = np.random.default_rng(config.seed)
    host_audio = (0.1 * rng.standard_normal((options.batch_size, samples, autoencoder.config.io_channels))).astype(
        np.float32
    )
    host_latents = rng.standard_normal((options.batch_size, samples // ratio, autoencoder.config.latent_dim)).astype(
        np.float32
    )
    audio = global_array(host_audio, mesh, rules)
    latents = global_array(host_latents, mesh, rules)

    state, state_shardings, ae_params, ae_shardings, init_seconds = init_for_benchmark(
        task, "autoencoder", config.seed, options.skip_train, mesh, rules
    )

    common = dict(options=options, mesh=mesh, rules=rules, audio_seconds_per_item=window_seconds)

    def encode(params, audio):  # audio [batch, T, 2] -> latents [batch, T/ratio, latent_dim] (the mean)
        return autoencoder.apply({"params": params}, audio, None, method=type(autoencoder).encode)[0]

    def decode(params, latents):  # latents [batch, N, latent_dim] -> audio [batch, N*ratio, 2]
        return autoencoder.apply({"params": params}, latents, method=type(autoencoder).decode)

    results = [
        measure_inference(
            "encode",
            "audio -> latents (mean, no sampling)",
            encode,
            ae_params,
            ae_shardings,
            (audio,),
            input_shapes={"encode_input": list(audio.shape)},
            **common,
        ),
        measure_inference(
            "decode",
            "latents -> audio",
            decode,
            ae_params,
            ae_shardings,
            (latents,),
            input_shapes={"decode_input": list(latents.shape)},
            **common,
        ),
    ]
    del ae_params  # the train state is donated from here on
    if not options.skip_train:
        for phase in options.train_phases:
            step_fn, description = vae_phase_function(task, phase)
            result, state = measure_train_phase(
                f"train/{phase}",
                description,
                step_fn,
                state,
                state_shardings,
                {"audio": audio},
                options=options,
                mesh=mesh,
                rules=rules,
                audio_seconds_per_item=window_seconds,
            )
            results.append(result)

    info = {
        "window_samples": samples,
        "window_seconds": window_seconds,
        "requested_seconds": options.seconds,
        "sample_rate": sample_rate,
        "downsampling_ratio": ratio,
        "audio_shape": list(host_audio.shape),
        "latent_shape": list(host_latents.shape),
        "loss_warmup_steps": int(config.loss.warmup_steps),
        "train_phases": [] if options.skip_train else list(options.train_phases),
        "init_seconds": init_seconds,
    }
    return info, results
