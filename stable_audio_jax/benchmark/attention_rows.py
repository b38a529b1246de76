"""The attention share of a model's step: every attention call it traces, timed on its own.

`traced_attention_calls(fn, *args)` traces `fn` abstractly (`jax.eval_shape`, nothing runs)
and returns the shapes of its `dot_product_attention` calls. `measure_attention` times those
calls alone, with the same kernel setting, dtypes, masks and biases (random inputs), forward
only or forward + backward (as a train step runs them): each distinct shape is one compiled
program that makes the call as often as the model does, in a loop. Set beside the model's
own row it gives the share of the step that attention takes; XLA's FLOP count of the same
programs gives its share of the FLOPs.

Outside the model XLA cannot fuse the attention with its neighbours (projections, norms), so
the share is an estimate of the attention's cost, not a slice of the model's profile.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

from stable_audio_jax.benchmark.harness import Measurement, global_array, measure
from stable_audio_jax.benchmark.options import Options


def traced_attention_calls(fn: Callable, *args: Any) -> list[Any]:
    """The `AttentionCall`s of `fn(*args)` (abstract arguments are fine), in trace order."""
    import jax

    from stable_audio_jax.models import attention

    with attention.record_attention_calls() as calls:
        jax.eval_shape(fn, *args)
    return list(calls)


def _program(call: Any, count: int, backward: bool) -> Callable:
    """`(q, k, v, bias, key_mask) -> output` running the call `count` times in one loop (and its
    gradient with respect to q, k and v if `backward`). Each pass reads the previous pass's
    result (added at 1e-3), so XLA can neither merge the passes nor drop any of them."""
    import jax
    import jax.numpy as jnp

    from stable_audio_jax.models.attention import dot_product_attention

    def forward(q, k, v, bias, key_mask):
        return dot_product_attention(q, k, v, bias=bias, key_mask=key_mask, scale=call.scale)

    def step(qkv, bias, key_mask):
        if not backward:
            return (forward(*qkv, bias, key_mask),)

        def loss(q, k, v):
            return jnp.sum(forward(q, k, v, bias, key_mask).astype(jnp.float32))

        return jax.grad(loss, argnums=(0, 1, 2))(*qkv)

    def repeated(q, k, v, bias, key_mask):
        qkv = (q, k, v)
        carry = tuple(jnp.zeros_like(a) for a in qkv[: 3 if backward else 1])

        def body(_, carry):
            return step(tuple(a + 1e-3 * c for a, c in zip(qkv, carry)) + qkv[len(carry) :], bias, key_mask)

        return jax.lax.fori_loop(0, count, body, carry)

    return repeated


def measure_attention(
    name: str,
    calls: list[Any],
    *,
    backward: bool,
    options: Options,
    mesh: Any,
    rules: tuple,
    batch_size: int,
    audio_seconds_per_item: float,
    seed: int = 0,
) -> tuple[Measurement, dict[str, Any]]:
    """Time `calls` alone (see the module docstring); returns the summed measurement (each timed
    call the sum over the distinct shapes' programs) and a breakdown per shape."""
    import jax
    import numpy as np

    from stable_audio_jax.parallel import with_rules

    counts = collections.Counter(calls)
    rng = np.random.default_rng(seed)
    total_steps = np.zeros(options.steps)
    lower = compile_ = flops = 0.0
    flops_known = True
    shapes = []
    for index, (call, count) in enumerate(counts.items()):
        dtype = jax.numpy.dtype(call.dtype)  # bfloat16 included
        q = rng.standard_normal(call.query_shape).astype(dtype)
        k = rng.standard_normal(call.key_shape).astype(dtype)
        v = rng.standard_normal(call.key_shape).astype(dtype)
        bias = np.zeros(call.bias_shape, dtype) if call.bias_shape is not None else None
        key_mask = global_array(np.ones(call.key_shape[:2], bool), mesh, rules) if call.key_mask else None
        args = tuple(global_array(a, mesh, rules) for a in (q, k, v)) + (bias, key_mask)
        result, _ = measure(
            f"{name}[{index}]",
            "",
            jax.jit(with_rules(_program(call, count, backward), rules)),
            args,
            options=options,
            mesh=mesh,
            batch_size=batch_size,
            audio_seconds_per_item=audio_seconds_per_item,
            input_shapes={},
        )
        total_steps += np.asarray(result.step_seconds)
        lower += result.lower_seconds
        compile_ += result.compile_seconds
        if result.flops_per_device is None:
            flops_known = False
        else:
            flops += count * result.flops_per_device  # XLA counts a loop body once
        shapes.append(
            dict(
                dataclasses.asdict(call),
                count=count,
                median_seconds=result.median_seconds,  # all `count` calls
                flops_per_device=result.flops_per_device,
            )
        )
    kind = "forward + backward" if backward else "forward"
    measurement = Measurement(
        name=name,
        description=(
            f"the model's {len(calls)} attention calls ({len(counts)} distinct shapes), {kind}, timed alone at "
            "its shapes and kernel: per timed call, the sum of the distinct shapes' programs (each makes its calls in a loop)"
        ),
        batch_size=batch_size,
        audio_seconds_per_item=audio_seconds_per_item,
        input_shapes={f"query[{i}]": list(c.query_shape) for i, c in enumerate(counts)},
        lower_seconds=lower,
        compile_seconds=compile_,
        step_seconds=[float(s) for s in total_steps],
        flops_per_device=flops if flops_known else None,
        peak_bytes_in_use=None,
        compiled_memory=None,
    )
    return measurement, {"calls": len(calls), "shapes": shapes}
