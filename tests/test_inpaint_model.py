"""The inpainting-conditioned model type (stable-audio-tools' `diffusion_cond_inpaint`).

The fixture `fixtures/sao_inpaint/` is SAO's layout at a tiny size as an inpainting model,
built, randomised and run by stable-audio-tools itself
(`tests/reference/make_sao_model_reference.py --variant=inpaint`): the DiT's forward on
mask inputs, with and without CFG, and 4000 draws of the reference's training masks.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stable_audio_jax.convert import sao_checkpoint
from stable_audio_jax.convert.state_dict import ConversionError
from stable_audio_jax.diffusion import guidance, inpaint_masks
from stable_audio_jax.errors import UserError
from stable_audio_jax.inference.generate import AudioGenerator, apply_model, guidance_conditioning
from stable_audio_jax.models.dit import DiTConfig, expected_num_params
from stable_audio_jax.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel, example_inputs
from tests.parity import assert_parity
from tests.sao_fixture import SaoFixture, channels_last

FIXTURE = SaoFixture("sao_inpaint")


@pytest.fixture(scope="module")
def reference() -> dict:
    return FIXTURE.reference()


@pytest.fixture(scope="module")
def inpaint_converted(tmp_path_factory) -> tuple[str, dict]:
    return FIXTURE.convert(str(tmp_path_factory.mktemp("sao_inpaint") / "pretrained"))


# ------------------------------------------------------------------ the model
def _tiny_inpaint_config(order=("inpaint_masked_input", "inpaint_mask")) -> LatentDiffusionConfig:
    dit = DiTConfig(**dict(DiTConfig.tiny(io_channels=4, cond_token_dim=64).to_dict(), input_concat_dim=5))
    return LatentDiffusionConfig(
        dit=dit, timing_kind="number", global_timing=True, text_tokens=3, input_concat_ids=order
    )


def test_config_checks_the_input_concat_channels():
    assert _tiny_inpaint_config().inpainting
    with pytest.raises(ValueError, match="input_concat_dim=5"):
        LatentDiffusionConfig(
            dit=DiTConfig.tiny(io_channels=4, cond_token_dim=64),
            timing_kind="number",
            global_timing=True,
            text_tokens=3,
            input_concat_ids=("inpaint_masked_input", "inpaint_mask"),
        )
    with pytest.raises(ValueError, match="an order of"):
        _tiny_inpaint_config(order=("inpaint_mask", "inpaint_mask"))


@pytest.mark.slow
def test_inpaint_inputs_change_the_output_and_default_to_zeros():
    config = _tiny_inpaint_config()
    model = LatentDiffusionModel(config)
    inputs = example_inputs(config, frames=6, batch_size=2)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), *inputs)["params"])
    assert params["dit"]["project_in"]["kernel"].shape == (4 + 5, 128)
    assert expected_num_params(config.dit) == sum(a.size for a in jax.tree.leaves(params["dit"]))
    # The zero-initialised preprocess conv would hide the masked latents only through the residual.
    params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.PRNGKey(1), a.shape), params)
    x = jax.random.normal(jax.random.PRNGKey(2), inputs[0].shape)
    rest = inputs[1:]
    plain = model.apply({"params": params}, x, *rest)
    zeros = model.apply(
        {"params": params}, x, *rest, inpaint_mask=jnp.zeros((2, 6)), inpaint_masked_input=jnp.zeros_like(x)
    )
    np.testing.assert_array_equal(plain, zeros)
    mask = jnp.asarray([[1, 1, 0, 0, 1, 1]] * 2, jnp.float32)
    given = model.apply({"params": params}, x, *rest, inpaint_mask=mask, inpaint_masked_input=x * mask[..., None])
    assert float(jnp.max(jnp.abs(given - plain))) > 1e-3
    with pytest.raises(ValueError, match=r"inpaint_mask must be \(2, 6\)"):
        model.apply({"params": params}, x, *rest, inpaint_mask=jnp.zeros((2, 5)))


def test_a_plain_model_refuses_inpaint_inputs():
    config = LatentDiffusionConfig(
        dit=DiTConfig.tiny(io_channels=4, cond_token_dim=64), timing_kind="number", global_timing=True, text_tokens=3
    )
    model = LatentDiffusionModel(config)
    inputs = example_inputs(config, frames=6)
    params = model.init(jax.random.PRNGKey(0), *inputs)["params"]
    with pytest.raises(ValueError, match="not inpainting-conditioned"):
        model.apply({"params": params}, *inputs, inpaint_mask=jnp.zeros((1, 6)))


# --------------------------------------------------------------- conversion
def test_architecture_keeps_the_checkpoint_channel_order():
    arch = sao_checkpoint.architecture_from_model_config(FIXTURE.model_config())
    assert arch.diffusion.input_concat_ids == ("inpaint_mask", "inpaint_masked_input")
    assert arch.diffusion.dit.input_concat_dim == arch.diffusion.latent_dim + 1


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["model"]["diffusion"].update(input_concat_ids=["inpaint_mask"]), "input_concat_ids"),
        (lambda c: c["model"]["diffusion"]["config"].update(input_concat_dim=3), "input_concat_dim=9"),
        (lambda c: c.update(model_type="diffusion_cond"), "diffusion.input_concat_ids"),
        (lambda c: c.update(model_type="diffusion_uncond"), "model_type is 'diffusion_uncond'"),
    ],
)
def test_unsupported_inpaint_configs_name_the_field(edit, message):
    config = FIXTURE.model_config()
    edit(config)
    with pytest.raises(ConversionError, match=message):
        sao_checkpoint.architecture_from_model_config(config)


def test_conversion_keeps_every_parameter(inpaint_converted, reference):
    params = inpaint_converted[1]["params"]
    assert params["diffusion"] + params["autoencoder"] == int(reference["parameters"])


def _conditions(reference: dict, with_inpaint: bool = True):
    text, mask = jnp.asarray(reference["text"]), jnp.asarray(reference["text_mask"])
    starts = jnp.asarray(reference["seconds_start"])
    totals = jnp.asarray(reference["seconds_total"])
    inpaint = ()
    if with_inpaint:
        inpaint = (
            jnp.asarray(reference["inpaint_mask"][:, 0]),
            jnp.asarray(channels_last(reference["inpaint_masked_input"])),
        )
    return guidance_conditioning(text, mask, text, mask, jnp.zeros((2,), bool), starts, totals, *inpaint)


@pytest.mark.parity
def test_forward_with_mask_inputs_matches_the_reference(inpaint_converted, reference):
    generator = AudioGenerator.from_pretrained(inpaint_converted[0])
    assert generator.model.config.inpainting
    x, t = jnp.asarray(channels_last(reference["x"])), jnp.asarray(reference["t"])
    cond, uncond = _conditions(reference)
    v = apply_model(generator.model, generator.params, x, t, cond)
    assert_parity(v, channels_last(reference["v"]), "v with mask inputs")
    guided = guidance.guided_v_model(
        functools.partial(apply_model, generator.model, generator.params), cond, uncond, 4.0, 0.0
    )
    assert_parity(guided(x, t), channels_last(reference["v_cfg"]), "CFG 4 v with mask inputs")
    # The mask inputs matter: without them the output is another one.
    plain, _ = _conditions(reference, with_inpaint=False)
    v_plain = apply_model(generator.model, generator.params, x, t, plain)
    assert float(np.max(np.abs(np.asarray(v_plain) - channels_last(reference["v"])))) > 1e-2


@pytest.mark.slow
def test_generation_with_the_inpaint_model_keeps_the_known_frames(inpaint_converted):
    generator = AudioGenerator.from_pretrained(inpaint_converted[0])
    rate = generator.sample_rate
    audio = np.asarray(
        jax.random.uniform(jax.random.PRNGKey(3), (generator.window_samples, 2), minval=-0.5, maxval=0.5)
    )
    kwargs = dict(seconds_total=generator.window_seconds, steps=4, return_latents=True, seed=1)
    regions = [(0.05, 0.12)]
    latents = generator.generate(["a drum loop"], inpaint_audio=audio, inpaint_regions=regions, **kwargs)
    known = np.asarray(generator._encode_init(audio, 1, generator.window_samples))
    frame = generator.autoencoder.config.downsampling_ratio / rate
    first, last = int(np.floor(0.05 / frame)), int(np.ceil(0.12 / frame))
    np.testing.assert_array_equal(latents[0, :first], known[0, :first])
    np.testing.assert_array_equal(latents[0, last:], known[0, last:])
    assert float(np.max(np.abs(latents[0, first:last] - known[0, first:last]))) > 1e-2


@pytest.mark.e2e
def test_training_feeds_random_masks_and_the_kept_latents(inpaint_converted, latents, tmp_path):
    from stable_audio_jax.training.diffusion_task import DiffusionTask
    from stable_audio_jax.training.trainer import Trainer
    from tests.sao_finetune import finetune_config

    config = finetune_config(inpaint_converted[0], latents[0], num_steps=2, checkpoint_every=2)
    config.diffusion.inpaint_masks.mask_type_probabilities = (0.5, 0.0, 0.5)  # no plain text-to-audio rows
    task = DiffusionTask(config)
    batch = next(task.make_dataset("train", batch_size=8, shard_index=0, shard_count=1))
    batch = {k: jnp.asarray(v) for k, v in task.model_inputs(batch).items()}
    inputs = task.noised_inputs(batch, jax.random.PRNGKey(0), 0.0)
    mask, masked = np.asarray(inputs["inpaint_mask"]), np.asarray(inputs["inpaint_masked_input"])
    assert mask.shape == (8, task.latent_frames) and 0 < mask.mean() < 1
    assert np.all(masked[mask == 0] == 0) and np.all(np.abs(masked[mask == 1]).max(axis=-1) > 0)
    summary = Trainer(config, str(tmp_path / "run"), task).train()
    assert summary["end_step"] == 2 and np.isfinite(summary["last_metrics"]["loss"])
    config.diffusion.inpaint_masks.mask_type_probabilities = (0.5, 0.5)
    with pytest.raises(UserError, match="inpaint_masks: inpainting mask_type_probabilities"):
        DiffusionTask(config)


# ------------------------------------------------------------ training masks
def _reference_masks(reference: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kinds = reference["mask_stats_kinds"].astype(np.int32)
    draws, rows = kinds.shape
    real = reference["mask_stats_real"]
    bits = np.unpackbits(reference["mask_stats_bits"])[: draws * rows * 32]
    return bits.reshape(draws, rows, 32).astype(np.float32), kinds, real


def _our_masks(real: np.ndarray, draws: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    padding = jnp.arange(32)[None, :] < jnp.asarray(real)[:, None]
    padding = jnp.broadcast_to(padding, (draws,) + padding.shape).reshape(-1, 32)
    mask, kind = jax.jit(inpaint_masks.random_inpaint_mask)(jax.random.PRNGKey(seed), padding)
    return np.asarray(mask).reshape(draws, len(real), 32), np.asarray(kind).reshape(draws, len(real))


def _hidden_runs(mask: np.ndarray) -> np.ndarray:
    """Number of runs of hidden (0) frames per mask, over the last axis."""
    hidden = (mask == 0).astype(np.int32)
    starts = np.diff(np.concatenate([np.zeros(mask.shape[:-1] + (1,), np.int32), hidden], axis=-1), axis=-1) == 1
    return starts.sum(axis=-1)


def _close(ours: float, theirs: float, n: int, what: str, p: float) -> None:
    """Two sample means of n draws each agree within 5 standard errors of a Bernoulli(p)-sized spread."""
    se = np.sqrt(2 * max(p * (1 - p), 1e-4) / n)
    assert abs(ours - theirs) <= 5 * se + 1e-9, (
        f"{what}: ours {ours:.4f} vs reference {theirs:.4f} (5 se = {5 * se:.4f})"
    )


def test_training_masks_follow_the_reference_distribution(reference):
    theirs, their_kinds, real = _reference_masks(reference)
    draws = theirs.shape[0]
    ours, our_kinds = _our_masks(real, draws)
    n = draws * len(real)
    for kind, p in zip(
        (inpaint_masks.RANDOM_SEGMENTS, inpaint_masks.FULL_MASK, inpaint_masks.CAUSAL_MASK), (0.1, 0.8, 0.1)
    ):
        _close(float(np.mean(our_kinds == kind)), float(np.mean(their_kinds == kind)), n, f"fraction of kind {kind}", p)
    for row, length in enumerate(real):
        for kind in (inpaint_masks.RANDOM_SEGMENTS, inpaint_masks.CAUSAL_MASK):
            a, b = ours[our_kinds[:, row] == kind, row], theirs[their_kinds[:, row] == kind, row]
            if length == 0:  # nothing real to hide: kept whole
                assert a.min() == 1 and b.min() == 1
                continue
            m = min(len(a), len(b))
            hidden_a, hidden_b = 1 - a[:, :length].mean(), 1 - b[:, :length].mean()
            _close(hidden_a, hidden_b, m, f"hidden fraction, kind {kind}, {length} real frames", 0.25)
            # Padding is never hidden but by a full mask.
            assert a[:, length:].min(initial=1) == 1 and b[:, length:].min(initial=1) == 1
            if kind == inpaint_masks.CAUSAL_MASK:  # a kept prefix, then hidden up to the real end
                assert _hidden_runs(a[:, :length]).max() <= 1 and _hidden_runs(b[:, :length]).max() <= 1
                ends_hidden = lambda m: np.all((m[:, length - 1] == 0) | (m[:, :length].min(axis=1) == 1))  # noqa: E731
                assert ends_hidden(a) and ends_hidden(b)
            else:
                runs_a, runs_b = _hidden_runs(a[:, :length]), _hidden_runs(b[:, :length])
                assert runs_a.min() >= 1 and runs_b.min() >= 1 and runs_a.max() <= 10
                _close(runs_a.mean() / 10, runs_b.mean() / 10, m, f"hidden runs / 10, {length} real frames", 0.25)
    full_ours, full_theirs = ours[our_kinds == inpaint_masks.FULL_MASK], theirs[their_kinds == inpaint_masks.FULL_MASK]
    assert full_ours.max() == 0 and full_theirs.max() == 0


@pytest.mark.parametrize(
    "probabilities, segments, message",
    [
        ((0.5, 0.5), 10, "three non-negative"),
        ((0.5, 0.6, -0.1), 10, "three non-negative"),
        ((0.1, 0.8, 0.1), 0, "positive"),
    ],
)
def test_mask_options_are_checked(probabilities, segments, message):
    with pytest.raises(ValueError, match=message):
        inpaint_masks.random_inpaint_mask(
            jax.random.PRNGKey(0), jnp.ones((1, 4)), probabilities=probabilities, max_segments=segments
        )
