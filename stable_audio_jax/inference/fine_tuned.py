"""The diffusion weights of a fine-tuned pretrained model: a full fine-tuning run's EMA, or the
pretrained weights with LoRA adapters merged in (any number, each with its scale).

    launch/sample.py --pretrained=pretrained/sao --lora=runs/sao_lora:0.8 --lora=runs/other:0.5
    launch/export.py --pretrained=pretrained/sao --lora=runs/sao_lora --output_dir=pretrained/mine

Adapters are checked against the weights they are merged into: each LoRA run records the
fingerprint of its base (`lora.write_base_record`), and a different base is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax

from stable_audio_jax import lora, parallel, pretrained
from stable_audio_jax.errors import UserError
from stable_audio_jax.inference import pretrained_parts
from stable_audio_jax.training.diffusion_task import ADAPTERS
from stable_audio_jax.training.runs import load_run

# Runs whose EMA "diffusion" params are a diffusion model to sample (ARC's generator too).
DIFFUSION_TASKS = ("diffusion", "arc")


class DiffusionWeights(NamedTuple):
    """A diffusion model to sample or export, and where its weights and settings came from."""

    model: Any  # the diffusion module
    params: Any
    window: int  # samples
    sampling: dict[str, Any] | None  # the settings of the model's source (None: the defaults)


def full_run_weights(diffusion_dir: str, *, mesh: jax.sharding.Mesh, rules: parallel.Rules) -> DiffusionWeights:
    """The EMA weights of the newest step of a diffusion run trained without adapters, with
    the run's model, window and sampling section."""
    run = load_run(diffusion_dir, mesh=mesh, rules=rules, ema_only=True)
    if run.config.task not in DIFFUSION_TASKS:
        raise ValueError(f"{diffusion_dir} holds a {run.config.task!r} run, not a diffusion run")
    if run.task.lora.enabled:
        raise UserError(
            f"{diffusion_dir} is a LoRA run (it holds adapters, not a model): pass it as "
            f"--lora={diffusion_dir} with --pretrained=<its base>"
        )
    sampling = run.config.sampling.to_dict() if "sampling" in run.config else None
    return DiffusionWeights(
        run.task.model, run.state.ema_params["diffusion"], int(run.config.data.sample_size), sampling
    )


def merge_adapters(
    base: Any,
    adapters: Sequence[tuple[str, float]],
    *,
    base_source: str,
    mesh: jax.sharding.Mesh,
    rules: parallel.Rules,
) -> Any:
    """`base` (the diffusion params of `base_source`) with the EMA adapters of each LoRA run
    merged in at its scale (`lora.merge`); each run must have been trained on `base`."""
    loaded = []
    base_fingerprint = {"diffusion": lora.fingerprint(base)}  # once, however many adapters
    for run_dir, scale in adapters:
        run = load_run(run_dir, mesh=mesh, rules=rules, ema_only=True)
        if run.config.task != "diffusion" or not run.task.lora.enabled:
            raise UserError(
                f"--lora={run_dir} is not a LoRA run (a {run.config.task} run with "
                f"config.lora.rank={run.config.get('lora', {}).get('rank', 0)})"
            )
        lora.check_base_record(run_dir, base_fingerprint, f"--pretrained={base_source}")
        loaded.append((run.task.adapter(run.state.ema_params[ADAPTERS]), scale))
    return lora.merge(base, loaded)


def diffusion_weights(
    directory: str,
    config: Mapping[str, Any],
    *,
    diffusion_dir: str | None = None,
    adapters: Sequence[tuple[str, float]] = (),
    mesh: jax.sharding.Mesh,
    rules: parallel.Rules = parallel.DEFAULT_RULES,
) -> DiffusionWeights:
    """The diffusion model to sample or export: the pretrained directory's, a full fine-tuning
    run's (`diffusion_dir`) or the directory's with `adapters` (`[(lora run, scale)]`) merged
    in. Sampling settings stay the directory's unless a full run changed the objective (e.g. a
    v-model fine-tuned as a rectified flow), which brings its own."""
    if diffusion_dir is not None and adapters:
        raise UserError(
            "--diffusion_dir (a full fine-tuning run) and --lora (adapters over --pretrained) do not go together"
        )
    if diffusion_dir is not None:
        run = full_run_weights(diffusion_dir, mesh=mesh, rules=rules)
        if run.model.config.objective == pretrained_parts.diffusion_model(config).config.objective:
            run = run._replace(sampling=config.get("sampling"))
        return run
    params = pretrained_parts.restore_parts(directory, config, ("diffusion",), mesh, rules)["diffusion"]
    if adapters:
        merged = merge_adapters(params, adapters, base_source=directory, mesh=mesh, rules=rules)
        # Merged kernels are float32; the rest keeps the directory's dtype.
        params = jax.tree.map(lambda m, p: m.astype(p.dtype), merged, params)
    return DiffusionWeights(
        pretrained_parts.diffusion_model(config), params, int(config["sample_size"]), config.get("sampling")
    )


class PretrainedWeights(NamedTuple):
    """Everything a pretrained directory (with its fine-tuning, if any) samples with."""

    config: dict[str, Any]  # the directory's config.json
    model: Any  # the diffusion module
    params: dict[str, Any]  # {"diffusion", "autoencoder", "text_encoder"}, placed on `mesh`
    window: int  # samples
    sampling: dict[str, Any] | None  # the diffusion model's sampling settings
    mesh: jax.sharding.Mesh


def pretrained_weights(
    directory: str,
    *,
    diffusion_dir: str | None = None,
    adapters: Sequence[tuple[str, float]] = (),
    mesh: jax.sharding.Mesh | None = None,
    rules: parallel.Rules = parallel.DEFAULT_RULES,
) -> PretrainedWeights:
    """All parts of `directory` on `mesh` (default: every device on the data axis), the diffusion
    weights fine-tuned as `diffusion_weights` says."""
    config = pretrained.read_pretrained_config(directory)
    mesh = mesh or parallel.create_mesh((-1, 1, 1))
    params = pretrained_parts.restore_parts(directory, config, ("autoencoder", "text_encoder"), mesh, rules)
    diffusion = diffusion_weights(
        directory, config, diffusion_dir=diffusion_dir, adapters=adapters, mesh=mesh, rules=rules
    )
    params["diffusion"] = diffusion.params
    return PretrainedWeights(
        config=config,
        model=diffusion.model,
        params=params,
        window=diffusion.window,
        sampling=diffusion.sampling,
        mesh=mesh,
    )


def export_pretrained(
    directory: str,
    output_dir: str,
    *,
    diffusion_dir: str | None = None,
    adapters: Sequence[tuple[str, float]] = (),
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Write a new pretrained directory at `output_dir`: `directory`'s VAE, text encoder and
    tokenizer with the fine-tuned diffusion weights (`diffusion_weights`), so it samples and
    fine-tunes like the original. Returns a summary (what went in, parameter counts)."""
    from stable_audio_jax.input_pipeline.tokenizer import TextTokenizer

    if diffusion_dir is None and not adapters:
        raise UserError(
            "nothing to export: give --lora (adapters over --pretrained) or --diffusion_dir (a full fine-tuning run)"
        )
    weights = pretrained_weights(directory, diffusion_dir=diffusion_dir, adapters=adapters, mesh=mesh)
    provenance = {
        "pretrained": os.path.abspath(directory),
        "diffusion_dir": os.path.abspath(diffusion_dir) if diffusion_dir else None,
        "lora": [[os.path.abspath(path), scale] for path, scale in adapters],
    }
    exported = {key: value for key, value in weights.config.items() if key != "format"}
    # A full run may have trained another objective: its model config and sampling go in.
    exported.update(
        model=weights.model.config.to_dict(),
        sampling=weights.sampling,
        sample_size=weights.window,
        fine_tuned_from=provenance,
    )
    tokenizer = TextTokenizer.from_file(
        os.path.join(directory, pretrained.TOKENIZER_FILE), max_length=int(weights.config["text_encoder"]["max_length"])
    )
    pretrained.save_pretrained(output_dir, exported, weights.params, tokenizer)
    return {
        "output_dir": os.path.abspath(output_dir),
        **provenance,
        "params": {part: parallel.count_params(tree) for part, tree in weights.params.items()},
    }
