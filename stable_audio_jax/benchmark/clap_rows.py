"""The CLAP rows (`config.task == 'clap'`): text features, audio embedding and the contrastive step.

The window is the audio tower's (`config.data.sample_size`; `--seconds` does not apply);
token ids are random, each prompt of random length.
"""

from __future__ import annotations

from typing import Any, Callable

from stable_audio_jax.benchmark.harness import (
    Measurement,
    global_array,
    init_for_benchmark,
    measure_inference,
    measure_train_phase,
    mesh_rules,
)
from stable_audio_jax.benchmark.options import Options


def clap_param_counts(config: Any) -> dict[str, int]:
    """Parameter counts of both towers from `jax.eval_shape` (nothing is allocated)."""
    import jax

    from stable_audio_jax import parallel
    from stable_audio_jax.training.clap_task import build_clap

    model = build_clap(config)
    abstract = jax.eval_shape(
        model.init, {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, *clap_example_inputs(config, 1)
    )
    params = abstract["params"]
    counts = {"clap": parallel.count_params(params)}
    for name in ("text_encoder", "audio_encoder", "text_projection", "audio_projection"):
        counts[name] = parallel.count_params(params[name])
    return counts


def clap_example_inputs(config: Any, batch_size: int, seed: int = 0):
    """Seeded random CLAP inputs: audio `[batch, window, 2]`, token ids and mask `[batch, max_length]`
    (each prompt a random length between 3 and max_length tokens)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    length = config.text.max_length
    audio = (0.1 * rng.standard_normal((batch_size, config.data.sample_size, 2))).astype(np.float32)
    ids = rng.integers(5, config.model.text.vocab_size, (batch_size, length)).astype(np.int32)
    mask = np.arange(length)[None, :] < rng.integers(3, length + 1, (batch_size, 1))
    return audio, ids, mask


def benchmark_clap(config: Any, options: Options, mesh: Any) -> tuple[dict[str, Any], list[Measurement]]:
    """The contrastive training step, text-feature extraction (the diffusion conditioning) and
    audio embedding, at the audio tower's window (`--seconds` does not apply)."""
    from stable_audio_jax.models.clap import CLAP
    from stable_audio_jax.training.clap_task import CLAPTask

    rules = mesh_rules(config)
    with config.unlocked():
        config.data.batch_size = options.batch_size
    task = CLAPTask(config)
    window_seconds = config.data.sample_size / config.data.sample_rate
    host_audio, host_ids, host_mask = clap_example_inputs(config, options.batch_size, config.seed)
    audio, ids, mask = (global_array(x, mesh, rules) for x in (host_audio, host_ids, host_mask))

    state, state_shardings, params, param_shardings, init_seconds = init_for_benchmark(
        task, "clap", config.seed, options.skip_train, mesh, rules
    )

    def inference(name: str, description: str, method: Callable, inputs: tuple, seconds: float) -> Measurement:
        fn = lambda p, *x: task.model.apply({"params": p}, *x, method=method)  # noqa: E731
        return measure_inference(
            name,
            description,
            fn,
            params,
            param_shardings,
            inputs,
            options=options,
            mesh=mesh,
            rules=rules,
            audio_seconds_per_item=seconds,
        )

    results = [
        inference(
            "text_features",
            f"prompts -> text hidden state {task.model.config.feature_layer} "
            "(the diffusion conditioning; clips/s = prompts/s)",
            CLAP.text_features,
            (ids, mask),
            0.0,
        ),
        inference(
            "encode_audio", "audio window -> unit-norm joint embedding", CLAP.encode_audio, (audio,), window_seconds
        ),
    ]
    if not options.skip_train:
        result, state = measure_train_phase(
            "train/clap",
            "contrastive step: both towers, symmetric InfoNCE, AdamW, EMA",
            task.train_step,
            state,
            state_shardings,
            {"audio": audio, "text_ids": ids, "text_mask": mask},
            options=options,
            mesh=mesh,
            rules=rules,
            audio_seconds_per_item=window_seconds,
        )
        results.append(result)
    info = {
        "window_samples": config.data.sample_size,
        "window_seconds": window_seconds,
        "sample_rate": config.data.sample_rate,
        "text_length": config.text.max_length,
        "init_seconds": init_seconds,
    }
    return info, results
