"""The diffusion rows (`config.task == 'diffusion'`): guided sampling, CFG-batch forwards, the train step.

`sample/<N>_steps` runs N DPM-Solver++(3M) SDE steps with CFG in one jitted `lax.scan`
(then the `--vae_config` decoder if given); `sample/<M>_steps_pingpong` (`--flow_steps`) runs M
pingpong steps without CFG on the same backbone as a rectified-flow model would (the few-step
setting of Stable Audio Open Small, arXiv 2505.08175); `forward/<s>s_cfg` is one model forward on the
CFG batch `2B` at the latent frames covering `s` seconds; `train/diffusion` is the
v-objective step on random pre-encoded-shaped inputs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from stable_audio_jax.benchmark.attention_rows import measure_attention, traced_attention_calls
from stable_audio_jax.benchmark.harness import (
    Measurement,
    global_array,
    init_for_benchmark,
    measure,
    measure_inference,
    measure_train_phase,
    mesh_rules,
)
from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options, forward_row_name


def diffusion_param_counts(config: Any) -> dict[str, int]:
    """Parameter counts of the conditioned backbone (U-Net or DiT) from `jax.eval_shape` (nothing
    is allocated)."""
    import jax

    from stable_audio_jax import parallel
    from stable_audio_jax.training.diffusion_task import DiffusionTask

    task = DiffusionTask(config)
    params = jax.eval_shape(task.model.init, jax.random.PRNGKey(0), *task.example_inputs())["params"]
    backbone = task.model.config.backbone
    return {
        "diffusion": parallel.count_params(params),
        backbone: parallel.count_params(params[backbone]),
        "timing": parallel.count_params(params["timing"]),
    }


@dataclasses.dataclass(frozen=True)
class ForwardLength:
    """One `forward/<s>s_cfg` row: the requested seconds and the latent frames that cover them."""

    seconds: float  # as requested (--forward_seconds)
    frames: int  # latent frames of the row
    window_seconds: float  # the audio those frames decode to (>= seconds: rounded up)

    @property
    def name(self) -> str:
        return forward_row_name(self.seconds)


def forward_latent_frames(seconds: float, sample_rate: int, downsampling_ratio: int, backbone_factor: int) -> int:
    """Latent frames covering `seconds` of audio: `ceil(seconds * sample_rate / ratio)`, rounded
    up to a multiple of the backbone's downsampling factor (the U-Net's; 1 for the DiT)."""
    frames = math.ceil(seconds * sample_rate / downsampling_ratio)
    return backbone_factor * -(-frames // backbone_factor)


def forward_lengths(config: Any, options: Options) -> list[ForwardLength]:
    """The `--forward_seconds` rows of a diffusion config, in the order given."""
    from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig

    factor = LatentDiffusionConfig.from_dict(config.model.to_dict()).downsampling_factor
    sample_rate, ratio = int(config.data.sample_rate), int(config.pretransform.downsampling_ratio)
    lengths = []
    for seconds in options.forward_seconds:
        frames = forward_latent_frames(seconds, sample_rate, ratio, factor)
        lengths.append(ForwardLength(seconds, frames, frames * ratio / sample_rate))
    return lengths


def forward_call(task: Any, length: ForwardLength, batch_size: int, seed: int) -> tuple[Callable, tuple, tuple]:
    """`(fn, inputs, names)` of one CFG-batch forward at `length`: `fn(params, *inputs)` is
    `task.model.apply` on x `[2B, frames, latent_dim]`, the first B rows conditional, the last B
    the same inputs with `use_null_context`; host arrays, in `names` order."""
    import numpy as np

    b = batch_size
    model = task.model.config
    _, _, text, text_mask, start, _ = (np.asarray(a) for a in task.example_inputs(b))
    rng = np.random.default_rng(seed)
    cfg = lambda a: np.concatenate([a, a])  # noqa: E731  (CFG: both halves see the same inputs)
    inputs = (
        cfg(rng.standard_normal((b, length.frames, model.latent_dim)).astype(np.float32)),  # x
        cfg(rng.uniform(0.0, 1.0, (b,)).astype(np.float32)),  # t
        cfg(rng.standard_normal(text.shape).astype(np.float32)),
        cfg(text_mask),
        cfg(start),  # text, start
        np.full((2 * b,), round(length.window_seconds), np.int32),  # seconds_total
        np.repeat(np.array([False, True]), b),  # use_null_context: the unconditional half
    )
    names = ("x", "t", "text_features", "text_mask", "seconds_start", "seconds_total", "use_null_context")
    fn = lambda p, *a: task.model.apply({"params": p}, *a)  # noqa: E731
    return fn, inputs, names


def measure_forward(
    task: Any,
    params: Any,
    param_shardings: Any,
    length: ForwardLength,
    call: tuple[Callable, tuple, tuple],
    *,
    options: Options,
    mesh: Any,
    rules: tuple,
) -> Measurement:
    """One jitted `task.model.apply` (timing and text conditioning included) on the CFG batch
    `call` of `forward_call`. clips/s and audio s/s count the B conditional items (a guided
    denoiser evaluation of B clips per forward)."""
    b = options.batch_size
    fn, inputs, names = call
    return measure_inference(
        length.name,
        f"one {task.model.config.backbone} forward (timing + text conditioning included) on the CFG batch "
        f"2B={2 * b} (conditional half, unconditional half with use_null_context) at {length.frames} latent "
        f"frames = {length.window_seconds:.2f} s; clips/s and audio s/s count the B={b} conditional items",
        fn,
        params,
        param_shardings,
        tuple(global_array(a, mesh, rules) for a in inputs),
        options=options,
        mesh=mesh,
        rules=rules,
        batch_size=b,
        audio_seconds_per_item=length.window_seconds,
        input_shapes={n: list(a.shape) for n, a in zip(names, inputs)},
    )


def attention_share(row: Measurement, attention: Measurement) -> dict[str, float | None]:
    """The attention's share of `row`'s median time and of its XLA FLOPs (None: not counted)."""
    flops = None
    if row.flops_per_device and attention.flops_per_device is not None:
        flops = attention.flops_per_device / row.flops_per_device
    return {"seconds": attention.median_seconds / row.median_seconds, "flops": flops}


def benchmark_diffusion(config: Any, options: Options, mesh: Any) -> tuple[dict[str, Any], list[Measurement]]:
    """Guided sampling (`--sample_steps` DPM-Solver++(3M) SDE steps, CFG as one 2B batch, then the
    `--vae_config` decoder if given) at the config's window, the few-step flow row
    (`--flow_steps` pingpong steps, no CFG), one CFG-batch forward per `--forward_seconds`
    length, and the train step."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from stable_audio_jax import parallel
    from stable_audio_jax.diffusion import flow_samplers, guidance, samplers, schedule
    from stable_audio_jax.parallel import with_rules
    from stable_audio_jax.training.diffusion_task import DiffusionTask

    rules = mesh_rules(config)
    with config.unlocked():
        config.data.batch_size = options.batch_size
    task = DiffusionTask(config)
    lengths = forward_lengths(config, options)
    window_seconds = config.data.sample_size / config.data.sample_rate
    b = options.batch_size
    x, _, text, text_mask, start, total = (np.asarray(a) for a in task.example_inputs(b))
    rng = np.random.default_rng(config.seed)
    host = {
        "latent_mean": rng.standard_normal(x.shape).astype(np.float32),
        "latent_std": np.full(x.shape, 0.1, np.float32),
        "latent_mask": np.ones(x.shape[:2], bool),
        "text_features": rng.standard_normal(text.shape).astype(np.float32),
        "text_mask": text_mask,
        "seconds_start": start,
        "seconds_total": np.full_like(total, int(window_seconds)),
    }
    batch = {k: global_array(v, mesh, rules) for k, v in host.items()}

    state, state_shardings, params, param_shardings, init_seconds = init_for_benchmark(
        task, "diffusion", config.seed, options.skip_train, mesh, rules
    )

    results = []
    info = {
        "window_samples": int(config.data.sample_size),
        "window_seconds": window_seconds,
        "latent_shape": list(x.shape),
        "text_shape": list(text.shape),
        "sample_steps": options.sample_steps,
        "cfg_scale": options.cfg_scale,
        "vae_config": options.vae_config,
        "init_seconds": init_seconds,
        "flow_steps": options.flow_steps,
    }
    if options.sample_steps or options.flow_steps:  # 0 and 0: no sampling row (e.g. only forward rows)
        decoder = None
        if options.vae_config:
            import importlib.util

            spec = importlib.util.spec_from_file_location("vae_config", options.vae_config)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            from stable_audio_jax.training.vae_task import build_autoencoder

            autoencoder = build_autoencoder(module.get_config())
            if autoencoder.config.latent_dim != task.model.config.latent_dim:
                raise BenchmarkUsageError(
                    f"--vae_config latent_dim {autoencoder.config.latent_dim} differs from the "
                    f"{task.model.config.backbone}'s latent channels {task.model.config.latent_dim}"
                )
            vae_params, vae_shardings = parallel.init_sharded(
                lambda r: autoencoder.init(r, jnp.zeros((1, autoencoder.config.downsampling_ratio, 2)))["params"],
                jax.random.PRNGKey(1),
                mesh=mesh,
                rules=rules,
            )
            decoder = (autoencoder, vae_params, vae_shardings)

        vp, vs = (decoder[1], decoder[2]) if decoder else (None, None)
        sampling_inputs = (batch["text_features"], batch["text_mask"], batch["seconds_start"], batch["seconds_total"])

        def sampling_row(params: Any, steps: int, cfg_scale: float, flow_model: bool) -> Measurement:
            """`steps` of DPM-Solver++(3M) SDE on the v-objective, or of pingpong on the flow path."""
            sampler = "pingpong" if flow_model else "dpmpp_3m_sde"
            grid = (
                flow_samplers.sampler_times(sampler, steps)
                if flow_model
                else schedule.polyexponential_sigmas(steps, 0.03, 500.0)
            )

            def generate(p, vp, text_features, mask, seconds_start, seconds_total, key):
                def model_fn(xx, t, cond):
                    return task.model.apply({"params": p}, xx, t, cond["f"], cond["m"], cond["s"], cond["t"], cond["n"])

                cond = {
                    "f": text_features,
                    "m": mask,
                    "s": seconds_start,
                    "t": seconds_total,
                    "n": jnp.zeros(text_features.shape[:1], bool),
                }
                uncond = dict(cond, n=jnp.ones(text_features.shape[:1], bool))
                guided = guidance.guided_v_model(model_fn, cond, uncond, cfg_scale)
                noise_key, sampler_key = jax.random.split(key)
                noise = jax.random.normal(noise_key, x.shape)
                if flow_model:
                    latents = flow_samplers.sample(guided, noise, grid, sampler=sampler, rng=sampler_key)
                else:
                    latents = samplers.sample(
                        samplers.v_denoiser(guided), noise * grid[0], grid, sampler=sampler, rng=sampler_key
                    )
                if decoder is None:
                    return latents
                return decoder[0].apply({"params": vp}, latents, method=type(decoder[0]).decode)

            jitted = jax.jit(
                with_rules(generate, rules),
                in_shardings=(param_shardings, vs) + tuple(a.sharding for a in sampling_inputs) + (None,),
            )
            cfg = "with CFG (2B batch)" if cfg_scale != 1 else "no CFG"
            label = "pingpong (rectified flow)" if flow_model else "DPM-Solver++(3M) SDE"
            result, _ = measure(
                f"sample/{steps}_steps" + ("_pingpong" if flow_model else ""),
                f"{label}, {steps} steps, {cfg}"
                + (", + VAE decode" if decoder else ", latents only (no --vae_config)"),
                jitted,
                (params, vp) + sampling_inputs + (jax.random.PRNGKey(0),),
                options=options,
                mesh=mesh,
                batch_size=b,
                audio_seconds_per_item=window_seconds,
                input_shapes={"latents": list(x.shape)},
                count_flops=False,
            )  # one lax.scan over the steps: XLA would count one step
            return result

        if options.sample_steps:
            result = sampling_row(params, options.sample_steps, options.cfg_scale, flow_model=False)
            results.append(result)
            per_step = result.median_seconds / options.sample_steps
            # Labelled as an extrapolation: only meaningful when the sampling row ran few steps.
            info.update(
                extrapolated_100_step_seconds=per_step * 100,
                extrapolated_100_step_real_time_factor=window_seconds * b / (per_step * 100),
            )
        if options.flow_steps:
            few = sampling_row(params, options.flow_steps, 1.0, flow_model=True)
            results.append(few)
            if options.sample_steps:  # the measured ratio, to set beside the ratio of network evaluations
                evaluations = options.sample_steps * (2 if options.cfg_scale != 1 else 1) / options.flow_steps
                info.update(
                    few_step_speedup=results[-2].median_seconds / few.median_seconds,
                    few_step_evaluation_ratio=evaluations,
                )
    shares: dict[str, dict[str, Any]] = {}

    def time_attention_of(row: Measurement, calls: list, backward: bool) -> None:
        """`attention/<row>`: the row's attention calls alone, and their share of the row."""
        if not calls:
            return
        attention, shares[row.name] = measure_attention(
            f"attention/{row.name}",
            calls,
            backward=backward,
            options=options,
            mesh=mesh,
            rules=rules,
            batch_size=b,
            audio_seconds_per_item=row.audio_seconds_per_item,
            seed=config.seed,
        )
        results.append(attention)
        shares[row.name].update(attention_share(row, attention))

    for length in lengths:  # before the train step, which donates the parameters
        call = forward_call(task, length, b, config.seed)
        forward = measure_forward(task, params, param_shardings, length, call, options=options, mesh=mesh, rules=rules)
        results.append(forward)
        if options.attention_share:
            fn, inputs, _ = call
            time_attention_of(forward, traced_attention_calls(fn, params, *inputs), backward=False)
    if lengths:
        info["forward_frames"] = {length.name: length.frames for length in lengths}
    del params
    if not options.skip_train:
        train_calls = traced_attention_calls(task.train_step, state, batch) if options.attention_share else []
        train, state = measure_train_phase(
            "train/diffusion",
            "v-objective step: VAE posterior sample, cosine schedule, 10% null context, AdamW, EMA",
            task.train_step,
            state,
            state_shardings,
            batch,
            options=options,
            mesh=mesh,
            rules=rules,
            audio_seconds_per_item=window_seconds,
        )
        results.append(train)
        time_attention_of(train, train_calls, backward=True)
    if options.attention_share:
        info["attention_share"] = shares
    return info, results
