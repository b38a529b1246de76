"""Fine-tune Stable Audio Open on your audio: `configs/dit_sao.py`'s DiT from the public weights.

    python launch/train.py --config=configs/dit_sao_finetune.py --workdir=runs/sao_finetune \
        --config.init_from=pretrained/sao --config.data.train_shards=latents/train

`init_from` is required: a converted pretrained directory (`launch/convert_sao.py`) or a
run directory of this config (its newest EMA weights). The shards come from
`data/pre_encode.py --pretrained=<the same directory> --sample_size=2097152`.

Recipe: the full 47.55 s window (so samples keep SAO's length), a 10x lower learning rate
than pre-training (5e-6, reached after a short warm-up and then held: the inverse schedule's
inv_gamma is far beyond the run), 20k steps with a checkpoint every 1000, and a shorter
EMA (its warm-up makes it follow the weights being trained from the first steps). Batch 4 on one device: about 24 GiB for the float32 params,
Adam, EMA and gradients plus the rematerialised activations (`launch/benchmark.py
--memory_estimate`), before XLA's temporaries, so a 40-80 GB device; a 24 GB one does not
hold a full fine-tune of 1.06B parameters (Adam's state alone is 7.9 GiB). On several
devices `--config.mesh.shape=1,-1,1` shards the state (FSDP) and
`--config.data.batch_size` scales with them.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # config files load by path

import dit_sao  # noqa: E402

from stable_audio_jax import config_lib  # noqa: E402


def get_config():
    c = dit_sao.get_config()  # architecture, bf16 compute, remat policy, sampling
    c.init_from = config_lib.REQUIRED
    c.optimizer.update(lr=5e-6, inv_gamma=1e9)  # dit_sao's AdamW otherwise
    c.data.batch_size = 4
    c.data.worker_count = 4
    c.trainer.num_steps = 20_000
    c.trainer.log_every = 50
    c.trainer.eval_every = 1000
    c.trainer.checkpoint_every = 1000
    c.ema.beta = 0.999  # a short run: an EMA of ~1000 steps
    return c
