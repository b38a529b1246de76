"""Test configuration: 8 fake CPU devices so that meshes and sharding are real."""

import os
import sys

# Must be set before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

# The repository root holds `configs/`, `data/` and `launch/`, which tests import.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Identical programs (the same tiny config traced by several tests) compile once per
# session: the persistent compilation cache turns later compiles into cache hits.
import tempfile  # noqa: E402

import jax  # noqa: E402

CACHE_DIR = os.path.join(tempfile.gettempdir(), "sajax_test_xla_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE_DIR)  # for subprocesses too
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# Grain's multiprocessing reads absl flags; pytest never parses them.
from absl import flags  # noqa: E402

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory) -> str:
    """ArrayRecord shards of 10 short synthetic music clips (0.2-1 s), shared by training tests."""
    from stable_audio_jax.demo_corpus.synthetic import write_synthetic_dataset
    from stable_audio_jax.input_pipeline.shard_writer import write_shards

    root = tmp_path_factory.mktemp("synthetic_shards")
    write_synthetic_dataset(root / "raw", num_clips=10, seed=1, min_seconds=0.2, max_seconds=1.0)
    write_shards(root / "raw" / "train.jsonl", root / "shards", num_shards=2, progress=False)
    return str(root / "shards")


# The tiny SAO fixture converted and pre-encoded, for the fine-tuning tests (test_finetune,
# test_lora). Module-scoped: each module converts once. test_sao_checkpoint's own `converted`
# (the launch script's output and log) overrides this one there.
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> str:
    """`tests/fixtures/sao_small` converted to a pretrained directory (`sao_finetune.convert_fixture`)."""
    from tests.sao_finetune import convert_fixture

    return convert_fixture(str(tmp_path_factory.mktemp("finetune") / "pretrained"))


@pytest.fixture(scope="module")
def latents(converted, synthetic_shards, tmp_path_factory) -> tuple[str, dict]:
    """`synthetic_shards` pre-encoded with `converted`: the folder and the pre-encode report."""
    from tests.sao_finetune import pre_encode_fixture

    return pre_encode_fixture(converted, synthetic_shards, str(tmp_path_factory.mktemp("finetune_latents")))
