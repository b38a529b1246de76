"""Timing conditioning end to end, cheaply: the non-silent-length metric, and a tiny model that learns it.

The demo checks the real thing (tiny VAE + CLAP + diffusion, `seconds_total` in {3, 6, 10}
measured on decoded audio). Here the same conditioning, U-Net, schedule and sampler learn
a synthetic latent dataset whose only structure is timing: +-1 content up to
`seconds_total`, zeros after. Sampling must then stop the content within 1 s of the
request, which a model that ignores `seconds_total` cannot do.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stable_audio_jax.diffusion import samplers, schedule
from stable_audio_jax.metrics.timing import frame_rms_db, non_silent_seconds, timing_errors
from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel
from stable_audio_jax.models.unet import UNetConfig

SR = 8000


def test_non_silent_seconds_finds_the_end_of_a_tone():
    rng = np.random.default_rng(0)
    t = np.arange(4 * SR) / SR
    tone = 0.5 * np.sin(2 * np.pi * 440 * t) * (t < 2.3)
    hiss = 1e-4 * rng.standard_normal(t.shape)  # -80 dBFS: silence for the metric
    stereo = np.stack([tone + hiss, 0.5 * tone + hiss], axis=-1)
    assert abs(non_silent_seconds(stereo, SR, frame_seconds=0.05) - 2.3) <= 0.05
    assert non_silent_seconds(hiss, SR) == 0.0  # below the absolute floor
    assert non_silent_seconds(np.zeros((SR, 2)), SR) == 0.0
    # A quiet tail 30 dB down still counts as sound; at 50 dB down it does not.
    tail = tone + 0.5 * 10 ** (-30 / 20) * np.sin(2 * np.pi * 440 * t) * ((t >= 2.3) & (t < 3.1))
    assert abs(non_silent_seconds(tail, SR) - 3.1) <= 0.05
    tail = tone + 0.5 * 10 ** (-50 / 20) * np.sin(2 * np.pi * 440 * t) * ((t >= 2.3) & (t < 3.1))
    assert abs(non_silent_seconds(tail, SR) - 2.3) <= 0.05
    rows = timing_errors([stereo, stereo], [2.0, 3.0], SR)
    assert [round(r["error"], 1) for r in rows] == [0.3, -0.7]


def test_frame_rms_db_levels():
    levels = frame_rms_db(np.concatenate([np.full(100, 0.1), np.full(50, 1.0)]), 100)
    np.testing.assert_allclose(levels, [-20.0, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="samples"):
        frame_rms_db(np.zeros((2, 3, 4)), 10)


FRAMES, CHANNELS, FPS = 256, 8, 16  # 16 s windows of 16 latent frames per second


def _timing_dataset(rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
    total = rng.integers(2, FRAMES // FPS + 1, batch)
    x = rng.choice([-1.0, 1.0], (batch, FRAMES, CHANNELS)).astype(np.float32)
    return x * (np.arange(FRAMES)[None, :, None] < total[:, None, None] * FPS), total


@pytest.mark.slow
def test_tiny_model_learns_to_end_content_at_seconds_total():
    # The demo model's design (configs/diffusion_tiny.py) at a smaller scale: timing as
    # tokens, as global conditioning and per frame (seconds left), plus frame positions.
    unet = UNetConfig(
        **{
            **UNetConfig.tiny(in_channels=CHANNELS, text_length=4, context_features=16).to_dict(),
            "multipliers": (1, 1, 2, 2),
            "factors": (4, 4, 4),
            "num_blocks": (1, 1, 1),
            "attentions": (0, 0, 1, 1),
            "global_features": 32,
            "position_features": 16,
            "frame_features": 8,
        }
    )
    model = LatentDiffusionModel(
        LatentDiffusionConfig(unet=unet, timing_kind="table", max_seconds=32, global_timing=True, frame_seconds=1 / FPS)
    )
    batch, steps = 16, 700
    text = jnp.zeros((batch, 4, 16))
    text_mask = jnp.ones((batch, 4), bool)
    start = jnp.zeros((batch,), jnp.int32)
    params = model.init(
        jax.random.key(0), jnp.zeros((batch, FRAMES, CHANNELS)), jnp.zeros((batch,)), text, text_mask, start, start
    )["params"]
    tx = optax.adam(1e-3)

    def loss_fn(p, x0, total, key):
        time_key, noise_key = jax.random.split(key)
        t = schedule.sample_training_times(time_key, batch)
        noise = jax.random.normal(noise_key, x0.shape)
        v = model.apply({"params": p}, schedule.add_noise(x0, noise, t), t, text, text_mask, start, total)
        return jnp.mean(jnp.square(v - schedule.v_target(x0, noise, t)))

    @jax.jit
    def train_step(p, opt_state, x0, total, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, x0, total, key)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    rng = np.random.default_rng(0)
    opt_state = tx.init(params)
    for i in range(steps):
        x0, total = _timing_dataset(rng, batch)
        params, opt_state, loss = train_step(params, opt_state, x0, total, jax.random.key(i))
    assert float(loss) < 0.75

    requested = np.array([3, 6, 10] * 4)
    n = len(requested)
    v_model = lambda x, t: model.apply(
        {"params": params},
        x,
        t,
        jnp.zeros((n, 4, 16)),
        jnp.ones((n, 4), bool),
        jnp.zeros((n,), jnp.int32),
        jnp.asarray(requested),
    )
    sigmas = schedule.polyexponential_sigmas(30, 0.03, 80.0)
    noise = jax.random.normal(jax.random.key(123), (n, FRAMES, CHANNELS)) * sigmas[0]
    latents = np.asarray(
        jax.jit(lambda x: samplers.sample(samplers.v_denoiser(v_model), x, sigmas, sampler="dpmpp_2m"))(noise)
    )
    # Content frames have RMS 1 (0 dB), the end zeros: a frame "sounds" above -6 dB.
    rows = timing_errors(list(latents), requested, FPS, frame_seconds=1 / FPS, relative_db=6.0, floor_db=-6.0)
    errors = np.array([abs(r["error"]) for r in rows])
    assert np.mean(errors <= 1.0) >= 0.75, rows
    # Ignoring seconds_total would put every clip at the same length: the median error
    # would then be at least 3 s for these requests.
    assert np.median(errors) <= 0.5, rows
