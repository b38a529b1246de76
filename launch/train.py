"""Train a model: `python launch/train.py --config=configs/vae_tiny.py --workdir=runs/vae`.

Overrides: `--config.data.train_shards=shards/ --config.trainer.num_steps=1000`.
A run directory that already has checkpoints resumes from the newest intact one (model state
and data iterator); otherwise `--config.init_from=<pretrained or run directory>` starts the run
from those weights (fine-tuning, e.g. `configs/dit_sao_finetune.py`). SIGTERM or Ctrl-C saves a checkpoint and exits with code 143; run the same
command again to resume. Exit codes: `stable_audio_jax/errors.py` (and the README's "Faults and
recovery").

Multi-host: run the same command on every host. On TPU pods and SLURM / Open MPI /
Kubernetes jobs with more than one process, `jax.distributed` is set up from the environment
(JAX's cluster auto-detection); elsewhere pass `--coordinator_address=host:port
--num_processes=N --process_id=i` (`--num_processes=1` turns the detection off). Each process
loads its own rows of every global batch; only process 0 writes logs and metrics.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from stable_audio_jax import cli  # noqa: E402
from stable_audio_jax.errors import EXIT_PREEMPTED, UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, eval audio.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (multi-host); 1 skips cluster auto-detection."
)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    from stable_audio_jax import config_lib, parallel
    from stable_audio_jax.input_pipeline import records

    # Bad input fails here, before JAX starts or anything is built.
    config = _CONFIG.value
    config_lib.validate(config)
    if not config.data.train_shards:
        raise UserError(
            "no training data: set --config.data.train_shards=<folder or glob of "
            ".array_record shards> (make them with data/make_shards.py)"
        )
    for key in ("train_shards", "eval_shards"):
        if config.data.get(key):
            try:
                records.list_shards(config.data[key])
            except FileNotFoundError as e:
                raise UserError(f"--config.data.{key}: {e}") from None
    from stable_audio_jax.training.registry import build_task
    from stable_audio_jax.training.trainer import Trainer

    parallel.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    summary = Trainer(config, _WORKDIR.value, build_task(config)).train()
    logging.info("done: %s", json.dumps({k: v for k, v in summary.items() if k != "history"}))
    if "interrupted_at" in summary:
        cli.exit_with_line(
            f"interrupted at step {summary['interrupted_at']} after saving a checkpoint; "
            f"run the same command to resume",
            EXIT_PREEMPTED,
        )


if __name__ == "__main__":
    cli.run(main)
