"""`--memory_estimate`: one device's memory for a diffusion train step, per remat policy, from shapes.

Nothing is compiled or allocated and the mesh's devices need not exist: each estimate is
`memory_estimate.train_memory_estimate` of the diffusion train step (a LoRA run's adapters
with its frozen base as an input, else the whole model) on an abstract mesh.
"""

from __future__ import annotations

from typing import Any, Sequence

from stable_audio_jax.benchmark.harness import mesh_rules
from stable_audio_jax.benchmark.options import BenchmarkUsageError
from stable_audio_jax.benchmark.report import format_table


def diffusion_memory_estimates(
    config: Any, mesh_shape: Sequence[int | str], global_batch: int, policies: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """`TrainMemoryEstimate.to_json()` of the diffusion train step on a (data, fsdp, tensor) mesh of
    `mesh_shape` (integers, or the `--memory_mesh` strings) for each remat policy in `policies`
    (the backbone's `remat_policy` overridden; none given: the config's). Bad input (another
    task, a mesh shape that is not three positive integers, a batch that does not split over the
    data axes, an unknown policy) is a `BenchmarkUsageError`."""
    if config.task != "diffusion":
        raise BenchmarkUsageError(f"--memory_estimate covers the diffusion train step; config.task={config.task!r}")
    try:
        shape = [int(v) for v in mesh_shape]
    except ValueError:
        raise BenchmarkUsageError(
            f"--memory_mesh takes three integers (data,fsdp,tensor), got {list(mesh_shape)}"
        ) from None
    try:
        return _estimates(config, shape, global_batch, policies)
    except ValueError as e:  # mesh shape or batch split
        raise BenchmarkUsageError(str(e)) from e


def _estimates(
    config: Any, mesh_shape: Sequence[int], global_batch: int, policies: Sequence[str]
) -> list[dict[str, Any]]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from stable_audio_jax import lora
    from stable_audio_jax.benchmark import memory_estimate
    from stable_audio_jax.models.remat import REMAT_CHOICES
    from stable_audio_jax.training.diffusion_task import ADAPTERS, DiffusionTask

    mesh = memory_estimate.abstract_mesh(mesh_shape)
    rules = mesh_rules(config)
    backbone = config.model.get("dit") and "dit" or "unet"
    results = []
    for policy in policies or [config.model[backbone].remat_policy]:
        if policy not in REMAT_CHOICES:
            raise BenchmarkUsageError(f"--remat_policies: unknown policy {policy!r}; choose from {list(REMAT_CHOICES)}")
        policy_config = config.copy_and_resolve_references()
        with policy_config.unlocked():
            policy_config.model[backbone].remat_policy = policy
            policy_config.data.batch_size = global_batch
        task = DiffusionTask(policy_config)
        key = jax.ShapeDtypeStruct((2,), jnp.uint32)

        def make_inputs(batch_size: int, task=task):
            x, _, text, text_mask, start, total = task.example_inputs(batch_size)
            batch = {
                "latent_mean": x,
                "latent_std": x,
                "text_features": text,
                "text_mask": text_mask,
                "seconds_start": start,
                "seconds_total": total,
            }
            as_struct = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
            return jax.eval_shape(lambda b, k: task.noised_inputs(b, k, 0.1), jax.tree.map(as_struct, batch), key)

        with nn.logical_axis_rules(rules):
            state = jax.eval_shape(task.init_state, key)
            if task.lora.enabled:  # adapters train; the frozen base goes in as an input
                frozen = nn.meta.unbox(state.frozen["diffusion"])
                model, merged = ADAPTERS, lora.merged_kernels(state.frozen["diffusion"], task.lora_targets)

                def loss_fn(adapters, inputs, task=task):
                    return task.prediction_loss(
                        lora.merge(inputs["frozen"], [(task.adapter(adapters), 1.0)]), inputs["x"]
                    )

                def inputs_fn(batch_size: int, make_inputs=make_inputs, frozen=frozen):
                    return {"frozen": frozen, "x": make_inputs(batch_size)}
            else:
                loss_fn, inputs_fn, model, merged = task.prediction_loss, make_inputs, "diffusion", None
            estimate = memory_estimate.train_memory_estimate(
                state=state,
                loss_fn=loss_fn,
                make_inputs=inputs_fn,
                mesh=mesh,
                rules=rules,
                global_batch=global_batch,
                grad_accum_steps=task.grad_accum_steps,
                remat_policy=policy,
                model=model,
                merged=merged,
            )
        results.append(estimate.to_json())
    return results


def format_memory_estimates(estimates: Sequence[dict[str, Any]]) -> str:
    """One row per remat policy: the parts of the per-device estimate and their total."""
    first = estimates[0]
    parts = ("params", "optimizer", "ema", "gradients", "activations", "total")
    if any(e.get("frozen") for e in estimates):  # a LoRA run: its frozen base and merged kernels too
        parts = ("frozen", "merged", *parts)
    size = lambda b: f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"  # noqa: E731
    rows = [[e["remat_policy"]] + [size(e[k]) for k in parts] for e in estimates]
    lines = [
        f"per-device memory of one train step (estimate from shapes; mesh {first['mesh_shape']}, "
        f"global batch {first['global_batch']}, {first['micro_batch_per_device']} example(s) per device "
        f"per micro-batch, {first['grad_accum_steps']} micro-batch(es))"
    ]
    lines += format_table(["remat policy", *parts], rows)
    lines += [
        "params/optimizer/ema/gradients: each device's shards under the logical rules (with LoRA: of the "
        "adapters; frozen: the base, merged: its adapted kernels in float32); activations: the "
        "residuals saved for the backward pass (jax.vjp under eval_shape) for one micro-batch. "
        "XLA temporaries (the block being recomputed, fusion scratch) come on top: a lower bound."
    ]
    return "\n".join(lines)
