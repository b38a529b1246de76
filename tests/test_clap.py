"""CLAP: contrastive loss, retrieval metrics, CLAP score, training (sharded, resumable),
held-out retrieval above chance, and the frozen text conditioner loaded from a run.

Training tests use a micro CLAP (`micro_configs.micro_clap_config`: 1-layer text tower, a
two-stage HTSAT of width 16) on synthetic captioned clips, so every compiled step takes a few
seconds on 2 cores.
"""

import json
import os

import jax
import numpy as np
import pytest

from stable_audio_jax import config_lib, parallel
from stable_audio_jax.losses.contrastive import contrastive_loss
from stable_audio_jax.metrics.clap_score import clap_score, derangement
from stable_audio_jax.metrics.retrieval import recall_at_k
from stable_audio_jax.training.clap_task import CLAPTask
from stable_audio_jax.training.trainer import Trainer
from tests.captioned_data import write_captioned_data
from tests.micro_configs import micro_clap_config


@pytest.fixture(scope="module")
def captioned_data(tmp_path_factory):
    """Synthetic captioned clips (train + valid shards) and a BPE tokenizer of the train captions."""
    root = tmp_path_factory.mktemp("clap_data")
    data = write_captioned_data(root, num_clips=48, seed=3, min_seconds=1.0, max_seconds=2.0, splits=("train", "valid"))
    return {
        "root": root,
        "train": data["shards"]["train"],
        "valid": data["shards"]["valid"],
        "tokenizer": data["tokenizer"],
    }


# --------------------------------------------------------------------------- losses and metrics
def test_contrastive_loss_is_small_for_matched_pairs_and_log_n_for_uninformative_ones():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    aligned, metrics = contrastive_loss(x, x, np.log(100.0))
    assert float(aligned) < 0.05 and float(metrics["text_to_audio_accuracy"]) == 1.0
    same = np.tile(x[:1], (6, 1))  # every clip and caption alike: no information, loss = log(batch)
    uninformative, _ = contrastive_loss(same, same, np.log(100.0))
    np.testing.assert_allclose(float(uninformative), np.log(6), rtol=1e-5)
    # Symmetric in its two arguments.
    y = np.roll(x, 1, axis=0)
    np.testing.assert_allclose(float(contrastive_loss(x, y, 1.0)[0]), float(contrastive_loss(y, x, 1.0)[0]), rtol=1e-6)


def test_recall_at_k_counts_ranks_and_ties():
    identity = np.eye(4)
    r = recall_at_k(identity, ks=(1, 5))
    assert r["text_to_audio_recall@1"] == 1.0 and r["chance@1"] == 0.25 and r["chance@5"] == 1.0
    # Caption i's best clip is i+1: recall@1 is 0, recall@2 is 1.
    shifted = np.roll(np.eye(4), 1, axis=1) + 0.5 * np.eye(4)
    r = recall_at_k(shifted, ks=(1, 2))
    assert r["text_to_audio_recall@1"] == 0.0 and r["text_to_audio_recall@2"] == 1.0
    assert recall_at_k(np.ones((4, 4)), ks=(1,))["text_to_audio_recall@1"] == 0.0  # ties do not help


def test_clap_score_of_an_ideal_embedder_beats_shuffled_pairs(tmp_path):
    rng = np.random.default_rng(1)
    table = {f"prompt {i}": v / np.linalg.norm(v) for i, v in enumerate(rng.standard_normal((5, 8)))}

    class Ideal:  # each audio file's embedding is exactly its prompt's
        def embed_text(self, prompts):
            return np.stack([table[p] for p in prompts])

        def embed_audio_file(self, path):
            return table[os.path.basename(path)]

    prompts = list(table)
    result = clap_score(Ideal(), prompts, [str(tmp_path / p) for p in prompts])
    assert result["clap_score"] == pytest.approx(1.0)
    assert result["shuffled_clap_score"] < 0.9
    assert result["retrieval"]["text_to_audio_recall@1"] == 1.0
    perm = derangement(7, seed=3)
    assert sorted(perm) == list(range(7)) and not np.any(perm == np.arange(7))


def test_shuffled_baseline_over_other_prompts_when_prompts_repeat(tmp_path):
    """Two prompts, each generated twice: the baseline pairs a prompt only with the other
    prompt's clips (a derangement could pair it with its own clip at another length)."""
    embeddings = {"a": np.array([1.0, 0.0]), "b": np.array([0.6, 0.8])}

    class Exact:
        def embed_text(self, prompts):
            return np.stack([embeddings[p] for p in prompts])

        def embed_audio_file(self, path):
            return embeddings[os.path.basename(path)[0]]

    prompts, files = ["a", "a", "b", "b"], [str(tmp_path / n) for n in ("a1", "a2", "b1", "b2")]
    result = clap_score(Exact(), prompts, files, shuffled="other_prompts")
    assert result["clap_score"] == pytest.approx(1.0)
    assert result["shuffled_clap_score"] == pytest.approx(0.6)  # cos(a, b), all 8 cross pairs
    with pytest.raises(ValueError, match="shuffled must be"):
        clap_score(Exact(), prompts, files, shuffled="random")


# --------------------------------------------------------------------------- config errors
def test_clear_errors_for_missing_tokenizer_and_wrong_sample_rate(captioned_data, tmp_path):
    config = micro_clap_config(dict(captioned_data, tokenizer=""))
    with pytest.raises(ValueError, match="config.text.tokenizer is empty"):
        _ = CLAPTask(config).tokenizer
    config = micro_clap_config(dict(captioned_data, tokenizer=str(tmp_path / "missing.json")))
    with pytest.raises(FileNotFoundError):
        _ = CLAPTask(config).tokenizer
    config = micro_clap_config(captioned_data)
    config.data.sample_rate = 48000
    with pytest.raises(ValueError, match="sample_rate"):
        CLAPTask(config)
    config = micro_clap_config(captioned_data)
    config.model.text.vocab_size = 300  # smaller than the trained tokenizer's vocabulary
    with pytest.raises(ValueError, match="vocab"):
        _ = CLAPTask(config).tokenizer


# --------------------------------------------------------------------------- training
def _train(workdir, config):
    trainer = Trainer(config, str(workdir), CLAPTask(config))
    summary = trainer.train()
    return summary, jax.device_get(trainer.state)


def _train_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, f) if r["split"] == "train"]


@pytest.mark.slow
def test_sharded_training_matches_one_device(captioned_data):
    """The same two steps on a (2, 4) data x fsdp mesh and on one device.

    The first loss (initial weights) agrees to 1e-5 relative; the second, after one AdamW
    update, to 1e-3 (Adam's first step is +-lr wherever a gradient is near zero, so
    summation order can flip a few tiny gradients' sign).
    """
    from stable_audio_jax.input_pipeline.grain_pipeline import make_audio_dataset
    from stable_audio_jax.training.trainer import jit_train_step

    config = micro_clap_config(captioned_data)
    task = CLAPTask(config)
    host = next(
        iter(
            make_audio_dataset(
                captioned_data["train"],
                sample_rate=config.data.sample_rate,
                sample_size=config.data.sample_size,
                batch_size=8,
                seed=0,
                shuffle=False,
                num_epochs=1,
                random_crop=False,
                worker_count=0,
            )
        )
    )
    inputs = task.model_inputs(host)
    losses = {}
    for name, shape, devices in (("single", (1, 1, 1), jax.devices()[:1]), ("mesh", (2, 4, 1), jax.devices())):
        mesh = parallel.create_mesh(shape, devices=devices)
        state, shardings = parallel.init_sharded(
            task.init_state, jax.random.PRNGKey(0), mesh=mesh, rules=parallel.DEFAULT_RULES
        )
        batch = parallel.host_to_global(inputs, mesh)
        step = jit_train_step(
            task.train_step, mesh=mesh, rules=parallel.DEFAULT_RULES, state_shardings=shardings, example_batch=batch
        )
        with jax.set_mesh(mesh):
            state, m1 = step(state, batch)
            state, m2 = step(state, batch)
        losses[name] = (float(m1["loss"]), float(m2["loss"]))
        if name == "mesh":
            kernel = state.params["clap"]["text_encoder"]["layer_0"]["mlp"]["fc1"]["kernel"]
            # [embed, mlp] -> (fsdp, tensor): each device holds a quarter of the rows.
            assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
            assert {s.data.shape for s in kernel.addressable_shards} == {(kernel.shape[0] // 4, kernel.shape[1])}
    print("losses", losses)
    np.testing.assert_allclose(losses["mesh"][0], losses["single"][0], rtol=1e-5)
    np.testing.assert_allclose(losses["mesh"][1], losses["single"][1], rtol=1e-3)


@pytest.mark.slow
def test_resume_continues_exactly(captioned_data, tmp_path):
    """2 steps, stop, resume to 5 == 5 uninterrupted steps (losses, params, data order)."""
    _, straight = _train(tmp_path / "straight", micro_clap_config(captioned_data, num_steps=5))
    for num_steps in (2, 5):
        summary, resumed = _train(tmp_path / "resumed", micro_clap_config(captioned_data, num_steps=num_steps))
    assert summary["start_step"] == 2
    assert _train_losses(tmp_path / "resumed") == _train_losses(tmp_path / "straight")
    jax.tree.map(np.testing.assert_array_equal, straight.params, resumed.params)
    assert os.path.exists(tmp_path / "resumed" / "assets" / "tokenizer.json")


# --------------------------------------------------------------------------- learning, conditioner
# Text->audio recall@5 must beat chance (5/50 = 0.1) by these margins. Measured with this
# setup: 0.28 on the 50 held-out clips, 0.60 on 50 training clips (whole clips, not crops).
HELDOUT_MARGIN = 0.10
TRAIN_SET_MARGIN = 0.30


@pytest.fixture(scope="module")
def trained_clap(tmp_path_factory):
    """The micro CLAP trained for 400 steps on 350 synthetic clips; 50 held-out clips for scoring."""
    root = tmp_path_factory.mktemp("clap_retrieval")
    written = write_captioned_data(root, num_clips=400, seed=3, min_seconds=1.0, max_seconds=1.5, num_shards=2)
    data = {"train": written["shards"]["train"], "valid": written["shards"]["train"], "tokenizer": written["tokenizer"]}
    config = micro_clap_config(data, num_steps=400, log_every=50)
    config.data.batch_size = 16
    config.mesh.shape = (-1, 1, 1)
    config.optimizer = config_lib.adamw_config(3e-3, b1=0.9, b2=0.99, weight_decay=0.01, inv_gamma=1e6, warmup=0.9)
    config.ema.beta = 0.99
    summary, _ = _train(root / "run", config)
    with open(root / "raw" / "valid.jsonl") as f:
        heldout = [json.loads(line) for line in f]
    with open(root / "raw" / "train.jsonl") as f:
        seen = [json.loads(line) for line in f][:50]
    return {"run": str(root / "run"), "summary": summary, "raw": root / "raw", "heldout": heldout, "seen": seen}


@pytest.mark.parametrize("split,margin", [("seen", TRAIN_SET_MARGIN), ("heldout", HELDOUT_MARGIN)])
@pytest.mark.slow
def test_trained_clap_retrieves_above_chance(trained_clap, split, margin):
    """Text->audio retrieval among 50 fixed clips (training clips, then held-out ones):
    recall@5 beats chance by `margin`, and matched (caption, audio) pairs score higher
    than shuffled ones (CLAP score)."""
    from stable_audio_jax.inference.clap import CLAPEncoder

    history = trained_clap["summary"]["history"]
    assert history[-1]["contrastive_loss"] < 0.8 * history[0]["contrastive_loss"]
    encoder = CLAPEncoder.from_run(trained_clap["run"])
    entries = trained_clap[split]
    result = clap_score(
        encoder,
        [e["caption"] for e in entries],
        [str(trained_clap["raw"] / e["path"]) for e in entries],
        recall_ks=(1, 5),
    )
    retrieval = result["retrieval"]
    print(
        f"{split} ({len(entries)} clips): recall@1 {retrieval['text_to_audio_recall@1']:.3f} "
        f"(chance {retrieval['chance@1']:.3f}), recall@5 {retrieval['text_to_audio_recall@5']:.3f} "
        f"(chance {retrieval['chance@5']:.3f}); CLAP score {result['clap_score']:.3f} vs shuffled "
        f"{result['shuffled_clap_score']:.3f}"
    )
    assert len(entries) == 50
    assert retrieval["text_to_audio_recall@5"] >= retrieval["chance@5"] + margin
    assert result["clap_score"] > result["shuffled_clap_score"] + 0.1


@pytest.mark.slow
def test_text_conditioning_from_a_trained_run(trained_clap):
    """[batch, max_length, hidden] penultimate-layer features and the padding mask, jitted on
    the 8-device mesh: odd batch sizes, empty and over-long prompts, batch-independent."""
    from stable_audio_jax.inference.clap import CLAPEncoder

    encoder = CLAPEncoder.from_run(trained_clap["run"])
    max_length, hidden = encoder.tokenizer.max_length, encoder.model.config.text.hidden_size
    prompts = ["Genre: Rock | BPM: 120", "", "saw lead " * 200]
    features, mask = encoder.text_conditioning(prompts)
    assert features.shape == (3, max_length, hidden) and mask.shape == (3, max_length)
    assert mask.dtype == bool and np.all(np.isfinite(np.asarray(features)))
    mask = np.asarray(mask)
    assert mask[1].sum() == 2  # the empty prompt: <s> </s>
    assert mask[2].all()  # truncated to max_length
    ids, _ = encoder.tokenize(prompts[2:])
    assert ids[0, -1] == encoder.tokenizer.tokenizer.token_to_id("</s>")
    # Each prompt's features do not depend on the rest of the batch (or its padding).
    alone, _ = encoder.text_conditioning(prompts[:1])
    np.testing.assert_allclose(np.asarray(alone)[0], np.asarray(features)[0], atol=1e-5)
    # The penultimate hidden state of the text tower, as the diffusion model expects.
    from stable_audio_jax.models.text_encoder import TextEncoder

    ids, ids_mask = encoder.tokenize(prompts)
    outputs = TextEncoder(encoder.model.config.text).apply({"params": encoder.params["text_encoder"]}, ids, ids_mask)
    np.testing.assert_allclose(np.asarray(features), np.asarray(outputs.hidden_states[-2]), atol=1e-5)
    with pytest.raises(TypeError):
        encoder.text_conditioning("a single string")


@pytest.mark.slow
def test_clap_score_cli_and_bad_input(trained_clap, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = lambda *a: subprocess.run(
        [sys.executable, os.path.join(root, "launch", "clap_score.py"), *a],  # noqa: E731
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run(
        f"--clap_dir={trained_clap['run']}",
        f"--input={trained_clap['raw'] / 'valid.jsonl'}",
        "--limit=8",
        f"--output_json={tmp_path / 'score.json'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CLAP score over 8 files" in out.stdout
    assert json.loads((tmp_path / "score.json").read_text())["num_items"] == 8
    missing = run(f"--clap_dir={tmp_path / 'nothing'}", f"--input={trained_clap['raw'] / 'valid.jsonl'}")
    assert missing.returncode != 0 and "not a run directory" in missing.stderr
