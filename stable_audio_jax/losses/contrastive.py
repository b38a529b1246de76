"""Symmetric InfoNCE (CLIP/CLAP) loss between paired audio and text embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def contrastive_loss(
    audio_embeddings: jax.Array, text_embeddings: jax.Array, logit_scale: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy of matching each audio to its caption and each caption to its audio.

    Args:
      audio_embeddings, text_embeddings: `[batch, dim]`, L2-normalised; row i of each is
        a matched pair, every other row in the batch is a negative.
      logit_scale: scalar, the log of the inverse temperature (learned).

    Returns:
      `(loss, metrics)`: the mean of the audio->text and text->audio cross-entropies, and
      in-batch top-1 accuracies of both directions. Under `jit` with batch-sharded inputs
      the `[batch, batch]` similarity matrix spans the *global* batch: every device's
      audio is contrasted with every device's captions, as in multi-GPU CLIP training.
    """
    audio_embeddings = audio_embeddings.astype(jnp.float32)
    text_embeddings = text_embeddings.astype(jnp.float32)
    logits = jnp.exp(logit_scale) * audio_embeddings @ text_embeddings.T  # [audio, text]
    labels = jnp.arange(logits.shape[0])
    audio_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    text_to_audio = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    loss = 0.5 * (audio_to_text + text_to_audio)
    metrics = {
        "contrastive_loss": loss,
        "audio_to_text_accuracy": jnp.mean(jnp.argmax(logits, axis=1) == labels),
        "text_to_audio_accuracy": jnp.mean(jnp.argmax(logits, axis=0) == labels),
    }
    return loss, metrics
