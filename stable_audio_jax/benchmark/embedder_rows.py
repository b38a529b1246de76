"""The evaluation embedders' rows (`config.task == 'embedders'`, `configs/embedders.py`).

`embed/openl3` (FD_openl3's embedder) and `embed/passt` (KL_passt's tagger), each at its
public size with random weights, on a batch of `--batch_size` analysis windows (seeded
noise; decoding and resampling are not measured). `audio s/s` reads seconds of input audio
per second under the metric's protocol: OpenL3 embeds each channel's 1 s windows every 0.5 s,
so a window stands for 0.25 s of stereo audio; PaSST tags mono 10 s windows every 5 s, so a
window stands for 5 s. The project's CLAP audio tower is the `encode_audio` row of a CLAP
config (`configs/clap_tiny.py`: one window per channel).
"""

from __future__ import annotations

from typing import Any

from stable_audio_jax.benchmark.harness import Measurement, global_array, measure_inference, mesh_rules
from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options


def _embedders(config: Any) -> dict[str, tuple[Any, int, float]]:
    """name -> (module, window samples, seconds of audio one window stands for)."""
    from stable_audio_jax.models import openl3, passt

    known = {
        "openl3": lambda: (
            openl3.OpenL3(openl3.OpenL3Config.from_dict(config.embedders.openl3.to_dict())),
            openl3.FRAME_SAMPLES,
            0.5 / 2,  # hop 0.5 s per channel, two channels
        ),
        "passt": lambda: (
            passt.PaSST(passt.PaSSTConfig.from_dict(config.embedders.passt.to_dict())),
            int(passt.WINDOW_SECONDS * passt.SAMPLE_RATE),
            passt.WINDOW_SECONDS - 5.0,  # windows every 5 s
        ),
    }
    unknown = [n for n in config.embedders.names if n not in known]
    if unknown:
        raise BenchmarkUsageError(f"config.embedders.names: unknown {unknown}; known: {sorted(known)}")
    return {name: known[name]() for name in config.embedders.names}


def _abstract_params(module: Any, window: int) -> Any:
    import jax
    import jax.numpy as jnp

    return jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, window), jnp.float32))["params"]


def embedder_param_counts(config: Any) -> dict[str, int]:
    """Parameter counts of each embedder from `jax.eval_shape` (nothing is allocated)."""
    from stable_audio_jax import parallel

    return {name: parallel.count_params(_abstract_params(m, w)) for name, (m, w, _) in _embedders(config).items()}


def benchmark_embedders(config: Any, options: Options, mesh: Any) -> tuple[dict[str, Any], list[Measurement]]:
    """One row per embedder: a batch of windows -> embeddings / logits, parameters replicated."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rules = mesh_rules(config)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rng = np.random.default_rng(config.seed)
    results, info = [], {}
    for name, (module, window, seconds_per_window) in _embedders(config).items():
        params = jax.jit(module.init, out_shardings=replicated)(
            jax.random.PRNGKey(config.seed), jnp.zeros((1, window), jnp.float32)
        )["params"]
        param_shardings = jax.tree.map(lambda _: replicated, params)
        windows = global_array(
            (0.1 * rng.standard_normal((options.batch_size, window))).astype(np.float32), mesh, rules
        )
        results.append(
            measure_inference(
                f"embed/{name}",
                f"{name} analysis windows ({window} samples) -> outputs; audio s/s: {seconds_per_window:g} s per window",
                lambda p, x, module=module: module.apply({"params": p}, x),
                params,
                param_shardings,
                (windows,),
                options=options,
                mesh=mesh,
                rules=rules,
                audio_seconds_per_item=seconds_per_window,
            )
        )
        info[f"{name}_window_samples"] = window
        info[f"{name}_audio_seconds_per_window"] = seconds_per_window
        del params
    return info, results
