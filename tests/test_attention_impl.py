"""The attention-kernel knob (`models/attention.py`): the Pallas TPU flash kernel, run here in
Pallas's TPU interpret mode, equals XLA's attention on every input the models pass (bias, key
padding, grouped heads, an unscaled T5-style product, short sequences), through a whole DiT;
"auto" is XLA on a CPU; unsupported requests are one clear error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from stable_audio_jax.models import attention
from stable_audio_jax.models.attention import attention_implementation, dot_product_attention


def _inputs(q_len=256, kv_len=128, heads=4, kv_heads=4, dim=32):
    keys = jax.random.split(jax.random.key(0), 5)
    q = jax.random.normal(keys[0], (2, q_len, heads, dim))
    k = jax.random.normal(keys[1], (2, kv_len, kv_heads, dim))
    v = jax.random.normal(keys[2], (2, kv_len, kv_heads, dim))
    bias = jax.random.normal(keys[3], (1, heads, q_len, kv_len))
    mask = (jax.random.uniform(keys[4], (2, kv_len)) > 0.3).at[1].set(False)  # example 1: no key at all
    return q, k, v, bias, mask


@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(bias=True),
        dict(mask=True),
        dict(bias=True, mask=True, kv_heads=2),
        dict(scale=1.0, q_len=64, kv_len=64),
        dict(q_len=128, kv_len=24, mask=True),
    ],
    ids=["plain", "bias", "key_mask", "bias_mask_gqa", "unscaled_short", "short_keys"],
)
def test_pallas_kernel_equals_xla(case):
    q, k, v, bias, mask = _inputs(case.get("q_len", 256), case.get("kv_len", 128), kv_heads=case.get("kv_heads", 4))
    kwargs = dict(
        bias=bias if case.get("bias") else None,
        key_mask=mask if case.get("mask") else None,
        scale=case.get("scale"),
    )
    want = dot_product_attention(q, k, v, implementation="xla", **kwargs)
    with pltpu.force_tpu_interpret_mode():
        got = dot_product_attention(q, k, v, implementation="pallas_tpu", **kwargs)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)


def test_a_dit_forward_through_the_pallas_kernel_equals_xla():
    """The process-wide setting reaches a model's attention when it is traced."""
    from stable_audio_jax.models.dit import DiffusionTransformer, DiTConfig

    config = DiTConfig(io_channels=8, embed_dim=64, depth=2, num_heads=2, cond_token_dim=64, global_cond_dim=16)
    model = DiffusionTransformer(config)
    x = jax.random.normal(jax.random.key(1), (2, 127, 8))  # + the prepended global token: 128
    t = jnp.array([0.3, 0.7])
    cond = jax.random.normal(jax.random.key(2), (2, 8, 64))
    glob = jax.random.normal(jax.random.key(3), (2, 16))
    params = model.init(jax.random.key(0), x, t, cond, glob)
    apply = lambda: model.apply(params, x, t, cond, glob)  # noqa: E731
    with attention_implementation("xla"):
        want = apply()
    with attention_implementation("pallas_tpu"), pltpu.force_tpu_interpret_mode():
        got = apply()
    assert attention.attention_implementation_in_use() == "auto"  # the context restored it
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)


def test_auto_is_xla_on_cpu_and_bad_requests_are_one_line():
    q, k, v, bias, mask = _inputs(q_len=77, kv_len=77)
    with attention_implementation("auto"):
        auto = dot_product_attention(q, k, v, bias=bias, key_mask=mask)
    np.testing.assert_array_equal(
        np.asarray(auto), np.asarray(dot_product_attention(q, k, v, bias=bias, key_mask=mask, implementation="xla"))
    )
    with pytest.raises(ValueError, match="attention_impl='cudnn' needs a GPU; the backend is cpu"):
        dot_product_attention(q, k, v, implementation="cudnn")
    with pytest.raises(ValueError, match="query length 77 is neither a multiple of 128"):
        dot_product_attention(q, k, v, implementation="pallas_tpu")
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        attention.set_attention_implementation("flash")


def test_train_config_names_a_bad_kernel():
    from configs import vae_tiny
    from stable_audio_jax import config_lib
    from stable_audio_jax.errors import UserError

    config = vae_tiny.get_config()
    config.attention_impl = "flash"
    with pytest.raises(UserError, match="config.attention_impl='flash' \\(one of auto, xla, cudnn, pallas_tpu\\)"):
        config_lib.validate(config)
