"""Paper-size CLAP (Stable Audio 1.0, arXiv 2402.04825): RoBERTa-base text tower + HTSAT audio tower.

The paper gives CLAP as HTSAT 31M + RoBERTa 110M. HTSAT-tiny (embed 96, depths 2/2/6/2)
is 27.5M without the AudioSet head that CLAP does not use (30.2M with it), so it is the
paper's audio tower; stable-audio-tools' conditioner names `amodel="HTSAT-base"` (67.8M),
available as `htsat.htsat_base()`. 48 kHz, 10.23 s windows, joint space 512, 77-token
prompts. SA 1.0 trained it from scratch (100 epochs, batch 6,144 on 64 A100s); the
tokenizer is a RoBERTa-style byte-level BPE (`data/train_tokenizer.py`, or a user's
RoBERTa vocab.json + merges.txt).

Memory knobs: `--config.model.remat_policy=dots_with_no_batch_dims_saveable` (or "full")
rematerialises every text layer and Swin block; `--config.optimizer.grad_accum_steps=k`
back-propagates each global batch k micro-batches at a time with the gradient cache, which
keeps the contrastive loss over all 256 pairs exact (`training/grad_cache.py`).
"""

from stable_audio_jax import config_lib
from stable_audio_jax.models import htsat
from stable_audio_jax.models.text_encoder import TextEncoderConfig


def get_config():
    c = config_lib.clap_config(TextEncoderConfig.roberta_base().to_dict(), htsat.htsat_tiny().to_dict(), embed_dim=512)
    c.data.batch_size = 256
    c.data.worker_count = 8
    c.trainer.num_steps = 200_000
    c.trainer.log_every = 50
    c.trainer.eval_every = 2_000
    c.trainer.checkpoint_every = 2_000
    return c
