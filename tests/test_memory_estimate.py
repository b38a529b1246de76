"""The shape-only per-device memory estimate (`stable_audio_jax/benchmark/memory_estimate.py`) and
the benchmark's `--memory_estimate` mode (`stable_audio_jax/benchmark/diffusion_memory.py`)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import diffusion_tiny, dit_tiny
from stable_audio_jax import lora, parallel
from stable_audio_jax.benchmark import memory_estimate
from stable_audio_jax.benchmark.diffusion_memory import diffusion_memory_estimates, format_memory_estimates
from stable_audio_jax.benchmark.options import BenchmarkUsageError
from stable_audio_jax.training.diffusion_task import DiffusionTask

F32 = 4


class TwoLayers(nn.Module):
    """A `[batch, 64]` -> scalar MLP whose kernels carry FSDP / tensor logical axes."""

    @nn.compact
    def __call__(self, x):
        dense = lambda n, axes, name: nn.Dense(  # noqa: E731
            n, name=name, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)
        )
        return jnp.sum(dense(16, ("mlp", "embed"), "out")(dense(256, ("embed", "mlp"), "hidden")(x)))


def test_bytes_per_device_follows_the_rules():
    """FSDP splits the `embed` dimension 8 ways; biases (no logical axes) stay whole."""
    abstract = jax.eval_shape(TwoLayers().init, jax.random.PRNGKey(0), jnp.zeros((1, 64)))
    kernels = (64 * 256 + 256 * 16) * F32
    biases = (256 + 16) * F32
    one = memory_estimate.abstract_mesh((1, 1, 1))
    fsdp = memory_estimate.abstract_mesh((1, 8, 1))
    tensor = memory_estimate.abstract_mesh((1, 2, 4))
    rules = parallel.DEFAULT_RULES
    assert memory_estimate.bytes_per_device(abstract, one, rules) == kernels + biases
    assert memory_estimate.bytes_per_device(abstract, fsdp, rules) == kernels // 8 + biases
    # (1, 2, 4): every kernel has an `embed` (fsdp 2) and an `mlp` (tensor 4) dimension
    assert memory_estimate.bytes_per_device(abstract, tensor, rules) == kernels // 8 + biases


def test_bad_mesh_shape():
    with pytest.raises(ValueError, match="positive size"):
        memory_estimate.abstract_mesh((1, 0, 1))
    with pytest.raises(ValueError, match="positive size"):
        memory_estimate.abstract_mesh((8, 1))


def _squared_projection(w, x):
    return jnp.sum(jnp.square(x @ w))


@pytest.mark.parametrize("remat", [False, True])
def test_activation_bytes_count_what_the_backward_pass_keeps(remat):
    """For sum((x W)^2) the backward pass needs x (for dW) and x W (for the square), per
    example 64 + 256 floats; rematerialised, only the checkpoint's inputs: x (64 floats) and
    the kernel, which does not grow with the batch and so is not an activation."""
    fn = jax.checkpoint(_squared_projection) if remat else _squared_projection
    w = jax.ShapeDtypeStruct((64, 256), jnp.float32)
    make = lambda b: jax.ShapeDtypeStruct((b, 64), jnp.float32)  # noqa: E731
    per_example = 64 * F32 if remat else (64 + 256) * F32
    for batch in (1, 3):
        assert memory_estimate.activation_bytes(fn, w, make, batch) == batch * per_example
    kernel = 64 * 256 * F32 if remat else 0  # without remat, dW = x^T 2xW needs no W
    assert memory_estimate.saved_residual_bytes(fn, w, make(2)) == 2 * per_example + kernel
    with pytest.raises(ValueError, match="batch_size"):
        memory_estimate.activation_bytes(fn, w, make, 0)


@pytest.mark.e2e
def test_benchmark_memory_estimate_of_the_tiny_diffusion_model():
    """`--memory_estimate` on the demo's U-Net: remat shrinks the activations only, FSDP over
    8 devices holds about 1/8 of the state, and the parts add up to the total."""
    estimates = diffusion_memory_estimates(diffusion_tiny.get_config(), (2, 8, 1), 16, ["none", "full"])
    table = format_memory_estimates(estimates)
    assert "remat policy" in table and "lower bound" in table
    none, full = estimates
    assert (none["remat_policy"], full["remat_policy"]) == ("none", "full")
    assert none["micro_batch_per_device"] == 1 and none["mesh_shape"] == {"data": 2, "fsdp": 8, "tensor": 1}
    for e in (none, full):
        assert e["total"] == sum(e[k] for k in ("params", "optimizer", "ema", "gradients", "activations"))
        assert e["ema"] == e["params"] == e["gradients"]  # one float32 copy each, same shards
        assert e["optimizer"] >= 2 * e["params"]  # Adam's mu and nu
    assert full["params"] == none["params"]
    assert 0 < full["activations"] < none["activations"] / 2

    # The same model on one device: the FSDP shards are between 1/8 and 1/4 of the whole
    # (norms, biases and the narrow output convs are replicated).
    whole = diffusion_memory_estimates(diffusion_tiny.get_config(), (1, 1, 1), 1)[0]
    assert whole["params"] / 8 <= none["params"] < whole["params"] / 4
    assert whole["activations"] == pytest.approx(none["activations"], rel=0.01)  # 1 example per device both


@pytest.mark.slow
def test_benchmark_memory_estimate_bad_input():
    """As the flags give them: `--memory_mesh=1,2,1 --batch_size=3`, then `--remat_policies=some`
    with the default mesh (1,8,1) and batch (1)."""
    with pytest.raises(BenchmarkUsageError, match="does not split"):
        diffusion_memory_estimates(diffusion_tiny.get_config(), ["1", "2", "1"], 3)
    with pytest.raises(BenchmarkUsageError, match="unknown policy"):
        diffusion_memory_estimates(diffusion_tiny.get_config(), ["1", "8", "1"], 1, ["some"])


@pytest.mark.slow
def test_benchmark_memory_estimate_of_a_lora_run():
    """LoRA: adapters, their Adam and EMA as params/optimizer/ema, the bfloat16 base as frozen,
    and the float32 adapted kernels each step computes as merged."""
    config = dit_tiny.get_config()
    config.init_from, config.lora.rank = "pretrained/none", 4
    estimates = diffusion_memory_estimates(config, (1, 1, 1), 2)
    table = format_memory_estimates(estimates)
    assert "frozen" in table and "merged" in table
    estimate = estimates[0]
    task = DiffusionTask(config)
    base_count = parallel.count_params(jax.eval_shape(task.init_state, jax.random.PRNGKey(0)).frozen)
    assert estimate["frozen"] == 2 * base_count  # bfloat16
    assert estimate["merged"] == 4 * sum(math.prod(t.shape) for t in task.lora_targets.values())
    assert (
        estimate["params"]
        == estimate["ema"]
        == estimate["gradients"]
        == 4 * lora.adapter_size(task.lora_targets, task.lora)
    )
    assert estimate["total"] == sum(
        estimate[k] for k in ("frozen", "merged", "params", "optimizer", "ema", "gradients", "activations")
    )
