"""LoRA and DoRA adapters (`lora.py`): the merge algebra on the tiny models, the trainable share
of the full-size SAO DiT, and LoRA fine-tuning of the converted tiny SAO fixture
(conftest's `converted` and `latents`, as in `test_finetune.py`) through the trainer, sampling,
export and the launch scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from stable_audio_jax import lora, parallel, pretrained
from stable_audio_jax.errors import UserError
from stable_audio_jax.training.diffusion_task import ADAPTERS, DiffusionTask
from stable_audio_jax.training.runs import load_run
from stable_audio_jax.training.trainer import Trainer
from tests.bad_input import Case, check_cases
from tests.sao_finetune import converted_params, lora_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))


def _boxed_params(config):
    task = DiffusionTask(config)
    return task, jax.eval_shape(lambda r: task.model.init(r, *task.example_inputs())["params"], jax.random.PRNGKey(0))


def _tiny(config_name: str):
    """A tiny model's params and random adapters (b nonzero, so merges differ from the base)."""
    import importlib

    task, boxed = _boxed_params(importlib.import_module(config_name).get_config())
    params = nn.meta.unbox(task.model.init(jax.random.PRNGKey(0), *task.example_inputs())["params"])
    return params, boxed


def _random_adapter(boxed, seed: int, **settings) -> lora.Adapter:
    settings = lora.LoraSettings(**{"rank": 4, **settings})
    adapters = nn.meta.unbox(lora.init_adapters(jax.random.PRNGKey(seed), lora.find_targets(boxed, settings), settings))
    adapters = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(seed + 100), x.shape), adapters)
    return lora.Adapter(adapters, settings)


def _max_difference(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("config_name", ["dit_tiny", "diffusion_tiny"])
@pytest.mark.slow
def test_targets_cover_attention_and_mlp_projections(config_name):
    _, boxed = _tiny(config_name)
    targets = lora.find_targets(boxed, lora.LoraSettings(rank=4))
    assert targets and all(p.endswith("kernel") for p in targets)
    assert any("query" in p for p in targets) and any(p.endswith("out/kernel") for p in targets)
    out = next(t for p, t in targets.items() if p.endswith("attn/out/kernel") or p.endswith("attention/out/kernel"))
    assert out.in_axes == 2 and out.names[:2] == ("heads", "kv")  # [heads, head_dim, embed]: two input axes


@pytest.mark.slow
def test_merge_algebra_on_the_tiny_dit():
    params, boxed = _tiny("dit_tiny")
    first, second = _random_adapter(boxed, 1), _random_adapter(boxed, 2)
    assert lora.merge(params, [(first, 0.0)]) is params  # scale 0: the base itself, bit for bit
    merged = lora.merge(params, [(first, 1.0)])
    changed = [p for p in lora.adapter_paths(first.params)]
    flat_merged, flat_base = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (merged, params))
    for (path, m), (_, b) in zip(flat_merged, flat_base):
        name = "/".join(k.key for k in path)
        if name not in changed:
            np.testing.assert_array_equal(m, b)  # untargeted leaves untouched
    # Two LoRA adapters give the base plus the sum of their updates; scales multiply updates.
    both = lora.merge(params, [(first, 1.0), (second, 0.5)])
    summed = jax.tree.map(lambda b, x, y: b + (x - b) + (y - b), params, merged, lora.merge(params, [(second, 0.5)]))
    assert _max_difference(both, summed) < 1e-5
    doubled = lora.merge(params, [(first, 2.0)])
    assert _max_difference(doubled, jax.tree.map(lambda b, x: b + 2 * (x - b), params, merged)) < 1e-5
    # Fresh adapters (b = 0, magnitude offset 0) leave the model as it is, DoRA up to rounding.
    for kind in lora.KINDS:
        settings = lora.LoraSettings(rank=4, kind=kind)
        fresh = nn.meta.unbox(lora.init_adapters(jax.random.PRNGKey(3), lora.find_targets(boxed, settings), settings))
        assert _max_difference(lora.merge(params, [(lora.Adapter(fresh, settings), 1.0)]), params) < 1e-6
    # DoRA rescales each output unit of W + BA to the base norm plus its learned offset.
    dora = _random_adapter(boxed, 4, kind="dora")
    path = "dit/layers_0/self_attn/query/kernel"
    kernel = lora.merge(params, [(dora, 1.0)])["dit"]["layers_0"]["self_attn"]["query"]["kernel"]
    factors = dora.params["dit"]["layers_0"]["self_attn"]["query"]["kernel"]
    base = params["dit"]["layers_0"]["self_attn"]["query"]["kernel"]
    np.testing.assert_allclose(
        jnp.linalg.norm(kernel, axis=0), jnp.linalg.norm(base, axis=0) + factors["magnitude"], rtol=1e-5, err_msg=path
    )
    assert lora.fingerprint(params) == lora.fingerprint(jax.tree.map(jnp.copy, params))
    assert lora.fingerprint(params) != lora.fingerprint(merged)


def test_bad_settings_are_one_line():
    _, boxed = _tiny("dit_tiny")
    with pytest.raises(UserError, match=r"match no kernel of the model \(kernel paths look like"):
        lora.find_targets(boxed, lora.LoraSettings(rank=4, targets=("nothing_is_called_this",)))
    with pytest.raises(UserError, match=r"config.lora.rank=512 exceeds the dimensions of dit/\S+ \[128, 2, 64\]"):
        lora.find_targets(boxed, lora.LoraSettings(rank=512))
    with pytest.raises(UserError, match="config.lora.kind='qlora'"):
        lora.LoraSettings.from_config({"rank": 4, "kind": "qlora"})


@pytest.mark.slow
def test_rank_16_on_the_sao_dit_trains_a_few_percent():
    """Counted from `eval_shape` of the full-size Stable Audio Open DiT (nothing allocated)."""
    import dit_sao

    config = dit_sao.get_config()
    config.init_from = "pretrained/sao"  # a LoRA task needs a base; nothing is read here
    config.lora.rank = 16
    task = DiffusionTask(config)
    state = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    base, adapters = parallel.count_params(state.frozen["diffusion"]), parallel.count_params(state.params[ADAPTERS])
    print(
        f"SAO DiT: {adapters / 1e6:.2f} M LoRA-16 parameters over {len(task.lora_targets)} kernels, "
        f"{100 * adapters / base:.2f}% of {base / 1e9:.3f} B"
    )
    assert 1.0e9 < base < 1.1e9 and 0.005 < adapters / base < 0.05
    assert adapters == lora.adapter_size(task.lora_targets, task.lora)
    assert jax.tree.leaves(state.frozen)[0].dtype == jnp.bfloat16  # the frozen base in bfloat16


@pytest.fixture(scope="module")
def lora_run(converted, latents, tmp_path_factory):
    """A rank-4 LoRA run of the converted fixture: 6 steps, checkpoints at 3 and 6."""
    shards, _ = latents
    workdir = str(tmp_path_factory.mktemp("lora") / "run")
    config = lora_config(converted, shards)
    task = DiffusionTask(config)
    trainer = Trainer(config, workdir, task)
    state = trainer.initial_state(None)[0]
    query = ("dit", "layers_0", "self_attn", "query", "kernel")
    shardings = {
        "kernel": _at(state.frozen["diffusion"], query).sharding.spec,
        **{k: _at(state.params[ADAPTERS], query + (k,)).sharding.spec for k in "ab"},
    }
    initial = jax.device_get(state)
    trainer.close()
    trainer = Trainer(config, workdir, task)
    summary = trainer.train()
    return {
        "workdir": workdir,
        "config": config,
        "task": task,
        "initial": initial,
        "summary": summary,
        "final": jax.device_get(trainer.state),
        "shardings": shardings,
    }


def _at(tree, keys):
    for key in keys:
        tree = tree[key]
    return tree


@pytest.mark.slow
def test_lora_training_changes_only_the_adapters(lora_run, converted):
    initial, summary = lora_run["initial"], lora_run["summary"]
    assert summary["end_step"] == 6
    # The frozen base is the converted model in bfloat16, and only adapters train.
    base = converted_params("diffusion")
    for x, y in zip(jax.tree.leaves(initial.frozen["diffusion"]), jax.tree.leaves(base)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y).astype(jnp.bfloat16))
    assert set(initial.params) == {ADAPTERS}
    # After training the base is bit for bit what it was; the adapters moved.
    for x, y in zip(jax.tree.leaves(lora_run["final"].frozen), jax.tree.leaves(initial.frozen)):
        np.testing.assert_array_equal(x, y)
    # Adapters are sharded like their kernel ([embed, heads, kv] here), the rank axis replicated.
    specs = lora_run["shardings"]
    assert tuple(specs["a"]) == (*tuple(specs["kernel"])[:1], None), specs
    assert tuple(specs["b"]) == (None, *tuple(specs["kernel"])[1:]), specs
    assert any(axis is not None for axis in tuple(specs["kernel"])), specs  # the (2, 4) mesh splits it
    run = load_run(lora_run["workdir"])
    assert run.state.frozen == {} and set(run.state.params) == {ADAPTERS}  # adapters only in the checkpoint
    b_before = [x for p, x in jax.tree_util.tree_flatten_with_path(initial.params)[0] if p[-1].key == "b"]
    b_after = [x for p, x in jax.tree_util.tree_flatten_with_path(run.state.params)[0] if p[-1].key == "b"]
    assert not any(np.any(b) for b in b_before) and all(np.any(np.asarray(b)) for b in b_after)
    trained = parallel.count_params(run.state.params)
    print(f"LoRA-4 on the fixture DiT: {trained} trainable of {parallel.count_params(base)}")
    assert trained < 0.2 * parallel.count_params(base)
    # The checkpoint holds adapters, Adam and EMA: a fraction of the base's bytes.
    step_dir = os.path.join(lora_run["workdir"], "checkpoints", "6")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(step_dir) for f in fs)
    assert size < sum(np.asarray(x).nbytes for x in jax.tree.leaves(base))
    record = lora.read_base_record(lora_run["workdir"])
    assert record["source"] == os.path.abspath(converted)


@pytest.mark.slow
def test_lora_resumes_and_refuses_another_base(lora_run, converted, latents, tmp_path):
    from stable_audio_jax.inference.fine_tuned import export_pretrained

    shards, _ = latents
    config = lora_config(converted, shards)
    config.trainer.num_steps = 8
    again = Trainer(config, lora_run["workdir"], DiffusionTask(config)).train()
    assert again["start_step"] == 6 and again["end_step"] == 8
    # Another base (the fixture with these adapters merged in) is refused, on resume and at sampling.
    other = str(tmp_path / "other_base")
    export_pretrained(converted, other, adapters=[(lora_run["workdir"], 1.0)])
    wrong = lora_config(other, shards)
    wrong.trainer.num_steps = 10
    with pytest.raises(UserError, match=r"is not the base the adapters in .* were trained on"):
        Trainer(wrong, lora_run["workdir"], DiffusionTask(wrong)).train()


@pytest.mark.slow
def test_export_and_runtime_adapters_agree(lora_run, converted, tmp_path):
    from stable_audio_jax.inference.fine_tuned import export_pretrained
    from stable_audio_jax.inference.generate import AudioGenerator

    run = lora_run["workdir"]
    base = AudioGenerator.from_pretrained(converted)
    runtime = AudioGenerator.from_pretrained(converted, adapters=[(run, 1.0)])
    at_zero = AudioGenerator.from_pretrained(converted, adapters=[(run, 0.0)])
    for x, y in zip(jax.tree.leaves(at_zero.params), jax.tree.leaves(base.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # scale 0: the base exactly
    assert _max_difference(runtime.params, base.params) > 0
    out = str(tmp_path / "exported")
    summary = export_pretrained(converted, out, adapters=[(run, 1.0)])
    assert summary["lora"] == [[os.path.abspath(run), 1.0]]
    exported = AudioGenerator.from_pretrained(out)
    assert _max_difference(exported.params, runtime.params) < 1e-5
    with open(os.path.join(out, pretrained.CONFIG_FILE)) as f:
        assert json.load(f)["fine_tuned_from"]["pretrained"] == os.path.abspath(converted)
    a = exported.generate(["warm pads"], seconds_total=0.05, steps=2, seed=3)
    b = runtime.generate(["warm pads"], seconds_total=0.05, steps=2, seed=3)
    np.testing.assert_allclose(a, b, atol=1e-4)
    # Stacking: the run at 1.0 and at 0.5 is the run at 1.5 (LoRA updates add up).
    stacked = AudioGenerator.from_pretrained(converted, adapters=[(run, 1.0), (run, 0.5)])
    single = AudioGenerator.from_pretrained(converted, adapters=[(run, 1.5)])
    assert _max_difference(stacked.params, single.params) < 1e-5


def _script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_the_lora_flow_through_the_launch_scripts(lora_run, converted, latents, tmp_path):
    """train.py with --config.lora.* -> sample.py --lora -> export.py, as a user types them,
    and the bad inputs of that flow, each one line."""
    shards, _ = latents
    workdir, samples, exported = (str(tmp_path / name) for name in ("run", "samples", "exported"))
    config_file = str(tmp_path / "lora_fixture.py")
    with open(config_file, "w") as f:
        f.write(
            "import sys\nsys.path.insert(0, %r)\nfrom tests.sao_finetune import lora_config\n\n"
            "def get_config(arg):\n    converted, shards = arg.split(',')\n"
            "    return lora_config(converted, shards)\n" % ROOT
        )
    config = f"--config={config_file}:{converted},{shards}"
    train = _script(
        "launch/train.py",
        config,
        f"--workdir={workdir}",
        "--config.lora.rank=2",
        "--config.lora.kind=dora",
        "--config.trainer.num_steps=2",
        "--config.trainer.checkpoint_every=2",
    )
    assert train.returncode == 0, train.stderr[-3000:]
    sample = _script(
        "launch/sample.py",
        f"--pretrained={converted}",
        f"--lora={workdir}:0.5",
        "--prompt=warm pads",
        "--seconds_total=0.05",
        "--steps=2",
        f"--output_dir={samples}",
    )
    assert sample.returncode == 0, sample.stderr[-3000:]
    with open(os.path.join(samples, "settings.json")) as f:
        assert json.load(f)["lora"] == [[workdir, 0.5]]
    export = _script("launch/export.py", f"--pretrained={converted}", f"--lora={workdir}", f"--output_dir={exported}")
    assert export.returncode == 0, export.stderr[-3000:]
    assert json.loads(export.stdout)["lora"] == [[workdir, 1.0]]

    full_run = lora_run["workdir"]  # for the cases below: a LoRA run of the same base
    check_cases(
        [
            Case(
                "launch/train.py",
                [
                    config,
                    f"--workdir={tmp_path / 'none'}",
                    "--verbosity=-1",
                    "--config.lora.targets=('nothing_matches',)",
                ],
                ["config.lora.targets", "match no kernel"],
                [str(tmp_path / "none" / "checkpoints")],
            ),
            Case(
                "launch/train.py",
                [config, f"--workdir={tmp_path / 'big'}", "--verbosity=-1", "--config.lora.rank=100000"],
                ["config.lora.rank=100000", "exceeds"],
                [str(tmp_path / "big" / "checkpoints")],
            ),
            Case(
                "launch/sample.py",
                [f"--pretrained={exported}", f"--lora={full_run}", "--prompt=x", f"--output_dir={tmp_path / 's2'}"],
                ["is not the base the adapters", "were trained on"],
                [str(tmp_path / "s2" / "settings.json")],
            ),
            Case(
                "launch/sample.py",
                [f"--lora={full_run}", "--prompt=x", f"--output_dir={tmp_path / 's3'}"],
                ["--lora needs --pretrained"],
                [str(tmp_path / "s3")],
            ),
            Case(
                "launch/export.py",
                [f"--pretrained={converted}", f"--output_dir={tmp_path / 'e2'}"],
                ["nothing to export"],
                [str(tmp_path / "e2" / "params")],
            ),
        ]
    )


@pytest.mark.slow
def test_sampling_on_other_meshes_gives_the_same_audio(lora_run, converted):
    """Trained on a (2, 4, 1) mesh; sampled on (1, 8, 1) (weights split FSDP-style over 8
    devices) and on (8, 1, 1) (replicated): the same audio up to float32 summation order.
    Loads read only the EMA weights."""
    from stable_audio_jax import parallel
    from stable_audio_jax.inference.generate import AudioGenerator

    run = lora_run["workdir"]
    clips = {}
    for shape in ((1, 8, 1), (8, 1, 1)):
        generator = AudioGenerator.from_pretrained(converted, adapters=[(run, 1.0)], mesh=parallel.create_mesh(shape))
        split = [leaf for leaf in jax.tree.leaves(generator.params) if not leaf.sharding.is_fully_replicated]
        assert bool(split) == (shape == (1, 8, 1)), shape
        clips[shape] = generator.generate(
            ["warm pads", "a drum loop"], seconds_total=0.05, window_seconds=0.1, steps=2, seed=1
        )
    # Equal up to the order of float32 sums, which differs between shardings (the fixture's
    # random weights give clips of amplitude ~10, so the bound is relative to their peak).
    difference = np.max(np.abs(clips[(1, 8, 1)] - clips[(8, 1, 1)]))
    assert difference <= 1e-3 * np.max(np.abs(clips[(8, 1, 1)])), difference
    # EMA only: no optimizer state or live params are read, and the EMA is the full load's.
    full, ema_only = load_run(run), load_run(run, ema_only=True)
    assert ema_only.state.params == {} and ema_only.state.opt_state == {}
    for x, y in zip(jax.tree.leaves(ema_only.state.ema_params), jax.tree.leaves(full.state.ema_params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    loaded = sum(np.asarray(x).nbytes for x in jax.tree.leaves(ema_only.state))
    assert loaded * 3 < sum(np.asarray(x).nbytes for x in jax.tree.leaves(full.state))
