"""The benchmark library (`stable_audio_jax.benchmark`): parameter counts without allocation,
a tiny end-to-end run, the diffusion forward rows with the reference-timing plumbing (a fake
interpreter stands in for torch, which CI lacks), the peak-TFLOP/s table behind MFU and the
--compare mode; and `launch/benchmark.py` itself: its flags and its one-line errors.

The library runs in this process, on the 8 fake CPU devices of conftest.py, so the tiny run
also exercises the batch sharding over a real mesh. The script runs in subprocesses (it
defines absl flags at import, which would clash with other launch scripts imported into
this process).
"""

import contextlib
import importlib
import io
import json
import math
import os
import re
import subprocess
import sys
from typing import Any

import ml_collections
import pytest

from configs import vae_sa1, vae_sao, vae_tiny
from stable_audio_jax.benchmark import peak_flops
from stable_audio_jax.benchmark.diffusion_rows import forward_latent_frames
from stable_audio_jax.benchmark.harness import Measurement, hardware_info, xla_flops
from stable_audio_jax.benchmark.options import BenchmarkUsageError, Options
from stable_audio_jax.benchmark.reference import ReferenceRunError, run_reference_script
from stable_audio_jax.benchmark.report import build_report, compare_main, format_params, format_report
from stable_audio_jax.benchmark.runner import config_summary, param_counts, run_benchmark
from stable_audio_jax.benchmark.vae_rows import vae_window_samples
from stable_audio_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "launch", "benchmark.py")

# A shrunken tiny VAE (2 stages, 4 channels, one small FFT per loss) so that compiling the
# two training phases takes seconds on 2 cores; the code paths are those of the full model.
TINY_OVERRIDES = {
    "model.encoder_channels": 4,
    "model.decoder_channels": 4,
    "model.strides": (2, 4),
    "model.encoder_multipliers": (1, 2, 4),
    "model.decoder_multipliers": (1, 2, 4),
    "model.latent_dim": 8,
    "discriminator.filters": 4,
    "discriminator.n_ffts": (64,),
    "discriminator.hop_lengths": (16,),
    "discriminator.win_lengths": (64,),
    "loss.stft.fft_sizes": (64,),
    "loss.stft.hop_sizes": (16,),
}


def _config(name: str, overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
    """`configs/<name>.py` with `overrides` (dotted keys, as `--config.<key>=` on the command line)."""
    config = importlib.import_module(f"configs.{name}").get_config()
    config.update_from_flattened_dict(overrides or {})
    return config


def _benchmark(config: ml_collections.ConfigDict, options: Options) -> tuple[dict[str, Any], str]:
    """The report of `run_benchmark` as its JSON reads back, and what the script would
    print: the progress lines, then the formatted report."""
    progress = io.StringIO()
    with contextlib.redirect_stdout(progress):
        result = run_benchmark(config, options)
    return json.loads(json.dumps(result)), progress.getvalue() + "\n" + format_report(result)


def _run(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def _check(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc.stdout


def _param_lines(config_name: str) -> dict[str, str]:
    """`--params_only`'s lines: parameter name -> its formatted count."""
    out = format_params(param_counts(_config(config_name)))
    return {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.startswith("  ") and len(line.split()) == 2
    }


@pytest.mark.slow
def test_params_only_sao():
    lines = _param_lines("vae_sao")
    assert lines["autoencoder"] == "156,112,514"
    encoder, decoder = (int(lines[k].replace(",", "")) for k in ("encoder", "decoder"))
    assert encoder + decoder == 156_112_514
    assert int(lines["discriminator"].replace(",", "")) > 0


@pytest.mark.slow
def test_params_only_clap_paper_size():
    """The paper-size text tower is RoBERTa-base's encoder: 124,645,632 parameters with a
    50,265-token vocabulary (see text_encoder.expected_num_params for the formula)."""
    lines = {k: int(v.replace(",", "")) for k, v in _param_lines("clap_sa1").items()}
    assert lines["text_encoder"] == 124_645_632
    assert lines["audio_encoder"] == 27_534_488  # HTSAT-tiny without the AudioSet head
    assert (
        lines["clap"]
        == sum(lines[k] for k in ("text_encoder", "audio_encoder", "text_projection", "audio_projection")) + 1
    )  # + the temperature


def test_params_only_diffusion_paper_size():
    """The SA 1.0 U-Net: exactly 906,679,744 parameters (arXiv 2402.04825), plus the two
    513-row timing tables (2 x 513 x 768)."""
    lines = {k: int(v.replace(",", "")) for k, v in _param_lines("diffusion_sa1").items()}
    assert lines["unet"] == 906_679_744
    assert lines["timing"] == 2 * 513 * 768
    assert lines["diffusion"] == lines["unet"] + lines["timing"]


class _FakeCompiled:
    def __init__(self, analysis):
        self.analysis = analysis

    def cost_analysis(self):
        return self.analysis


def test_helpers():
    assert vae_window_samples(vae_sao.get_config(), 1.5) == 67584  # ceil(1.5 * 44100) = 66150 -> 33 x 2048
    assert vae_window_samples(vae_sa1.get_config(), 1.5) == 66560  # -> 65 x 1024
    # 441 samples, raised to the largest FFT (2048)
    assert vae_window_samples(vae_tiny.get_config(), 0.01) == 2048
    flops = [xla_flops(_FakeCompiled(a)) for a in ({"flops": 5.0}, [{"flops": 7.0}], [], None)]
    assert flops == [5.0, 7.0, None, None]
    # ceil(s * 44100 / 2048): 215.3 -> 216, 1012.1 -> 1013, 1023.9 -> 1024 (SAO's window); the
    # U-Net rounds 345 frames up to its 1024x downsampling factor.
    frames = [forward_latent_frames(s, 44100, 2048, 1) for s in (10, 47, 47.55)]
    assert frames + [forward_latent_frames(0.5, 44100, 64, 1024)] == [216, 1013, 1024, 1024]


@pytest.fixture(scope="module")
def tiny_report():
    return _benchmark(
        _config("vae_tiny", TINY_OVERRIDES),
        Options(
            batch_size=8,
            seconds=0.001,
            steps=1,
            warmup=0,
            train_phases=("generator", "discriminator", "generator_warmup"),
            peak_tflops=0.5,
        ),
    )  # CPU is not in the peak table: the flag gives the MFU column


@pytest.mark.e2e
def test_tiny_run_json(tiny_report):
    report, _ = tiny_report
    assert report["config"]["task"] == "vae"
    assert report["hardware"]["backend"] == "cpu"
    assert report["hardware"]["mesh_device_count"] == 8
    assert report["shapes"]["window_samples"] == 64  # 45 samples -> the 64-point FFT
    assert report["shapes"]["audio_shape"] == [8, 64, 2]
    assert report["shapes"]["latent_shape"] == [8, 8, 8]
    names = [m["name"] for m in report["measurements"]]
    assert names == ["encode", "decode", "train/generator", "train/discriminator", "train/generator_warmup"]
    for m in report["measurements"]:
        assert len(m["step_seconds"]) == 1
        assert m["median_seconds"] > 0 and m["compile_seconds"] > 0 and m["lower_seconds"] > 0
        assert m["items_per_second"] > 0 and m["audio_seconds_per_second"] > 0
        assert m["flops_per_device"] is None or m["flops_per_device"] > 0
        assert m["peak_bytes_in_use"] is None  # CPU has no memory statistics
        assert m["compiled_bytes_per_device"] is None or m["compiled_bytes_per_device"] > 0
        if m["tflops_per_second_per_device"] is not None:
            assert m["mfu"] == pytest.approx(m["tflops_per_second_per_device"] / 0.5)
    assert report["derived"]["train_alternating_items_per_second"] > 0
    assert report["peak"] == {"tflops_per_device": 0.5, "source": "flag"}
    assert report["options"]["peak_tflops"] == 0.5


@pytest.mark.e2e
def test_tiny_run_table(tiny_report):
    _, out = tiny_report
    assert "measurement" in out and "train/generator" in out and "TFLOP/s/dev" in out
    assert "backend=cpu" in out
    assert "MFU" in out and "peak: 0.5 TFLOP/s per device (flag)" in out


# --------------------------------------------------------------------------- forward rows
# Stands in for a torch interpreter running tests/reference/time_reference_dit.py: records its
# arguments and PYTHONPATH next to itself, then prints noise and the script's JSON line with
# fixed step times (0.5 s median per length).
_FAKE_REFERENCE = """#!{python}
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[2:])
with open(os.path.abspath(__file__) + ".json", "w") as f:
    json.dump({{"script": sys.argv[1], "args": args, "pythonpath": os.environ.get("PYTHONPATH", "")}}, f)
print("flash_attn not installed")
rows = [{{"frames": int(n), "step_seconds": [0.25, 0.5, 1.0], "median_seconds": 0.5}}
        for n in args["frames"].split(",")]
print(json.dumps({{"torch_version": "9.9-fake", "stable_audio_tools_version": "0.0.19", "threads": 3,
                  "params": 12345, "build_seconds": 0.1, "rows": rows}}))
"""


def _fake_interpreter(directory, body: str) -> str:
    path = directory / "python"
    path.write_text(body.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def forward_report(tmp_path_factory):
    """dit_tiny with one block: no sampling or train row, two forward lengths on the 8-device
    mesh (batch 8, CFG batch 16), their attention timed alone, and the fake reference."""
    directory = tmp_path_factory.mktemp("forward")
    fake = _fake_interpreter(directory, _FAKE_REFERENCE)
    result, out = _benchmark(
        _config("dit_tiny", {"model.dit.depth": 1}),
        Options(
            skip_train=True,
            sample_steps=0,
            forward_seconds=(0.1, 0.25),
            batch_size=8,
            steps=2,
            warmup=0,
            attention_share=True,
            reference_python=fake,
            reference_threads=3,
        ),
    )
    with open(fake + ".json") as g:
        return result, out, json.load(g)


def test_forward_rows(forward_report):
    report, out, _ = forward_report
    by_name = {m["name"]: m for m in report["measurements"]}
    assert list(by_name) == [
        "forward/0.1s_cfg",
        "attention/forward/0.1s_cfg",
        "forward/0.25s_cfg",
        "attention/forward/0.25s_cfg",
        "reference/forward/0.1s_cfg",
        "reference/forward/0.25s_cfg",
    ]
    # ceil(0.1 * 44100 / 64) = 69 and ceil(0.25 * 44100 / 64) = 173 latent frames (the DiT takes any).
    assert report["shapes"]["forward_frames"] == {"forward/0.1s_cfg": 69, "forward/0.25s_cfg": 173}
    for name, frames in (("forward/0.1s_cfg", 69), ("forward/0.25s_cfg", 173)):
        m = by_name[name]
        assert m["input_shapes"]["x"] == [16, frames, 32]  # the CFG batch 2B of B = 8
        assert m["input_shapes"]["text_features"] == [16, 77, 128]
        assert m["batch_size"] == 8  # clips/s and audio s/s count the conditional half
        assert m["audio_seconds_per_item"] == pytest.approx(frames * 64 / 44100)
        assert m["audio_seconds_per_second"] == pytest.approx(8 * frames * 64 / 44100 / m["median_seconds"])
        assert len(m["step_seconds"]) == 2 and m["median_seconds"] > 0 and m["compile_seconds"] > 0
        assert m["flops_per_device"] > 0 and m["peak_bytes_in_use"] is None
    assert by_name["forward/0.25s_cfg"]["flops_per_device"] > by_name["forward/0.1s_cfg"]["flops_per_device"]
    assert "forward/0.1s_cfg" in out and "sample/" not in out and "train/" not in out


def test_attention_share_rows(forward_report):
    """Each forward's attention calls, recorded while tracing it: the one block's self- and
    cross-attention on the CFG batch, timed alone; XLA's FLOPs of them are the two products'."""
    report, _, _ = forward_report
    by_name = {m["name"]: m for m in report["measurements"]}
    shares = report["shapes"]["attention_share"]
    assert set(shares) == {"forward/0.1s_cfg", "forward/0.25s_cfg"}
    for name, frames in (("forward/0.1s_cfg", 69), ("forward/0.25s_cfg", 173)):
        share, attention = shares[name], by_name[f"attention/{name}"]
        assert share["calls"] == 2 and len(share["shapes"]) == 2
        self_attention, cross_attention = share["shapes"]
        assert self_attention["query_shape"][0] == 16 and self_attention["query_shape"][1] >= frames
        assert self_attention["key_shape"][1] == self_attention["query_shape"][1]
        assert cross_attention["query_shape"] == self_attention["query_shape"]
        assert cross_attention["key_shape"][1] == 79  # the 77 prompt tokens + 2 timing tokens
        products = sum(4 * math.prod(s["query_shape"]) * s["key_shape"][1] for s in share["shapes"])
        products /= report["hardware"]["device_count"]  # the batch is split over the 8 devices
        assert products <= attention["flops_per_device"] < 1.5 * products  # + softmax and scaling
        assert share["seconds"] == pytest.approx(attention["median_seconds"] / by_name[name]["median_seconds"])
        assert share["flops"] == pytest.approx(attention["flops_per_device"] / by_name[name]["flops_per_device"])
        assert 0 < share["flops"] < 1 and share["seconds"] > 0


def test_attention_share_of_the_train_step_and_the_scaling_suite():
    """The train step's attention, forward + backward, beside the step; the scaling suite's rows
    (one per backbone and length, each with its forward and train rows) and its share lines."""
    from stable_audio_jax.benchmark import suites

    report, _ = _benchmark(
        _config("dit_tiny", {"model.dit.depth": 1}),
        Options(sample_steps=0, seconds=0.1, batch_size=8, steps=1, warmup=0, attention_share=True),
    )
    names = [m["name"] for m in report["measurements"]]
    assert names == ["train/diffusion", "attention/train/diffusion"]
    share = report["shapes"]["attention_share"]["train/diffusion"]
    assert share["calls"] == 2 and 0 < share["flops"] < 1 and share["seconds"] > 0
    # forward + backward: about three times the forward's two products
    products = sum(4 * math.prod(s["query_shape"]) * s["key_shape"][1] for s in share["shapes"]) / 8
    assert 2.5 * products < report["measurements"][1]["flops_per_device"] < 5 * products

    rows = suites.suite_rows("scaling", smoke=False)
    assert [r.name for r in rows] == [f"{b}_{s}s" for b in ("unet", "dit") for s in (10, 30, 47, 95)]
    assert {r.config for r in rows} == {"configs/diffusion_sa1.py", "configs/dit_sao.py"}
    assert all(r.options["forward_seconds"] == (r.options["seconds"],) and r.options["attention_share"] for r in rows)
    suite = suites.suite_report("scaling", True, [(suites.suite_rows("scaling", smoke=True)[0], report)])
    table = suites.format_suite(suite)
    assert "attention alone" in table and "unet_1.5s/train/diffusion" in table
    assert f"{100 * share['seconds']:6.1f}%" in table


def test_attention_calls_are_recorded_while_tracing():
    """`record_attention_calls` sees every call traced in its block (nested blocks too) and
    nothing outside it; a loop program of `count` calls does `count` times the work."""
    import jax
    import jax.numpy as jnp

    from stable_audio_jax.benchmark.attention_rows import _program
    from stable_audio_jax.models.attention import dot_product_attention, record_attention_calls

    q, k = jnp.zeros((2, 16, 4, 8)), jnp.zeros((2, 5, 2, 8))
    mask = jnp.ones((2, 5), bool)
    with record_attention_calls() as outer:
        jax.eval_shape(lambda q, k: dot_product_attention(q, k, k), q, k)
        with record_attention_calls() as inner:
            jax.eval_shape(lambda q, k: dot_product_attention(q, k, k, key_mask=mask, scale=1.0), q, k)
    jax.eval_shape(lambda q, k: dot_product_attention(q, k, k), q, k)
    assert [c.key_mask for c in outer] == [False, True] and len(inner) == 1
    assert inner[0].query_shape == (2, 16, 4, 8) and inner[0].key_shape == (2, 5, 2, 8) and inner[0].scale == 1.0
    assert inner[0].flops == 4 * 2 * 4 * 16 * 5 * 8
    once, thrice = (
        jax.jit(_program(inner[0], n, backward)).lower(q, k, k, None, mask).compile()
        for n, backward in ((1, True), (3, True))
    )
    run_once, run_thrice = once(q, k, k, None, mask), thrice(q, k, k, None, mask)
    assert [a.shape for a in run_thrice] == [q.shape, k.shape, k.shape]  # dq, dk, dv carried through the loop
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in run_once + run_thrice)


def test_forward_reference_rows(forward_report):
    report, out, fake = forward_report
    by_name = {m["name"]: m for m in report["measurements"]}
    reference = by_name["reference/forward/0.25s_cfg"]
    assert reference["median_seconds"] == 0.5 and reference["step_seconds"] == [0.25, 0.5, 1.0]
    assert reference["input_shapes"] == {
        "x": [16, 32, 173],
        "cross_attn_cond": [16, 79, 128],
        "global_embed": [16, 256],
    }
    assert reference["audio_seconds_per_second"] == pytest.approx(8 * 173 * 64 / 44100 / 0.5)
    assert reference["compile_seconds"] is None and reference["flops_per_device"] is None
    ours = by_name["forward/0.25s_cfg"]["median_seconds"]
    assert report["derived"]["forward/0.25s_cfg median ours/reference"] == pytest.approx(ours / 0.5)
    section = report["hardware"]["reference"]
    assert section["torch_version"] == "9.9-fake" and section["threads"] == 3 and section["params"] == 12345
    # What the script was given: the DiT of the config, 77 text + 2 timing tokens, the frames.
    assert fake["script"].endswith(os.path.join("tests", "reference", "time_reference_dit.py"))
    assert fake["args"] == {
        "io_channels": "32",
        "embed_dim": "128",
        "depth": "1",
        "num_heads": "2",
        "cond_token_dim": "128",
        "global_cond_dim": "256",
        "ff_mult": "4",
        "text_tokens": "79",
        "frames": "69,173",
        "batch_size": "8",
        "steps": "2",
        "warmup": "0",
        "threads": "3",
        "seed": "0",
    }
    assert fake["pythonpath"].split(os.pathsep)[0] == os.path.join(ROOT, "tests", "reference", "shims")
    assert "reference: PyTorch stable-audio-tools 0.0.19, torch 9.9-fake, 3 threads" in out
    assert "forward/0.25s_cfg: median ours / reference = " in out
    assert "reference/forward/0.1s_cfg" in out


_FAILING_REFERENCE = """#!{python}
import sys
print("Traceback (most recent call last):", file=sys.stderr)
print("RuntimeError: out of memory", file=sys.stderr)
sys.exit(3)
"""


@pytest.mark.parametrize("case", ["fails", "no_json", "missing"])
def test_reference_failure_is_one_line(tmp_path, case):
    body = {"fails": _FAILING_REFERENCE, "no_json": "#!/bin/sh\necho not json; echo warning >&2\n"}.get(case)
    python = _fake_interpreter(tmp_path, body) if body else str(tmp_path / "nope")
    with pytest.raises(ReferenceRunError) as error:
        run_reference_script(python, {"frames": "4"})
    out = str(error.value)
    assert "\n" not in out
    assert out.startswith(f"reference timing with {python} ")
    if case == "fails":
        assert out.endswith("failed (exit 3): RuntimeError: out of memory")
    elif case == "no_json":
        assert "printed no JSON result" in out and "'not json'" in out and "'warning'" in out


@pytest.mark.slow
def test_few_step_row_beside_the_sampling_row():
    """`--flow_steps`: pingpong without CFG on the same backbone beside the CFG sampling row,
    with the measured speed-up and the ratio of network evaluations (2 x 4 / 2 = 4 here).
    Sampling rows report no FLOPs: XLA counts the scan over the steps once."""
    config = _config("dit_tiny", {"model.dit.depth": 1, "data.sample_size": 4096})
    report, out = _benchmark(
        config,
        Options(
            skip_train=True, sample_steps=4, flow_steps=2, cfg_scale=6.0, batch_size=1, steps=1, warmup=0, num_devices=1
        ),
    )
    by_name = {m["name"]: m for m in report["measurements"]}
    assert list(by_name) == ["sample/4_steps", "sample/2_steps_pingpong"]
    assert "pingpong (rectified flow), 2 steps, no CFG" in out
    shapes = report["shapes"]
    assert shapes["flow_steps"] == 2 and shapes["few_step_evaluation_ratio"] == 4
    assert shapes["few_step_speedup"] == pytest.approx(
        by_name["sample/4_steps"]["median_seconds"] / by_name["sample/2_steps_pingpong"]["median_seconds"]
    )
    assert all(m["flops_per_device"] is None and m["mfu"] is None for m in by_name.values())
    with pytest.raises(BenchmarkUsageError, match="--flow_steps must be >= 0"):
        Options(flow_steps=-1).validate()


def test_forward_usage_errors():
    unet = _config("diffusion_tiny")
    with pytest.raises(BenchmarkUsageError, match="needs a DiT config"):
        run_benchmark(unet, Options(forward_seconds=(1.0,), reference_python=sys.executable))
    with pytest.raises(BenchmarkUsageError, match="--forward_seconds measures the diffusion model"):
        run_benchmark(_config("vae_tiny"), Options(forward_seconds=(1.0,)))
    with pytest.raises(BenchmarkUsageError, match="give both"):
        run_benchmark(_config("dit_tiny"), Options(reference_python=sys.executable))


def test_indivisible_batch_is_a_usage_error():
    with pytest.raises(BenchmarkUsageError, match="not divisible"):
        run_benchmark(_config("vae_tiny"), Options(batch_size=3, steps=1))


# --------------------------------------------------------------------------- peak table
@pytest.mark.parametrize(
    "device_kind, label, tflops",
    [
        ("NVIDIA H100 80GB HBM3", "H100", 989.0),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
        ("NVIDIA H200", "H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
        ("NVIDIA A100-PCIE-40GB", "A100", 312.0),
        ("TPU v4", "TPU v4", 275.0),
        ("TPU v5 lite", "TPU v5e", 197.0),
        ("TPU v5e", "TPU v5e", 197.0),
        ("TPU v5p", "TPU v5p", 459.0),
        ("TPU v5", "TPU v5p", 459.0),  # v5p reports itself as "TPU v5"
        ("TPU v6 lite", "TPU v6e", 918.0),
        ("tpu V6E", "TPU v6e", 918.0),
    ],
)
def test_peak_table(device_kind, label, tflops):
    assert peak_flops.table_peak(device_kind) == (label, tflops)
    assert peak_flops.resolve_peak(0.0, device_kind) == (tflops, f"table: {label} bf16 dense")


@pytest.mark.parametrize("device_kind", ["cpu", "TPU v4 lite", "NVIDIA GeForce RTX 4090", "", None])
def test_peak_table_unknown_devices(device_kind):
    assert peak_flops.table_peak(device_kind) is None
    assert peak_flops.resolve_peak(0.0, device_kind) == (None, None)


def test_peak_flag_overrides_table():
    assert peak_flops.resolve_peak(500.0, "NVIDIA H100 80GB HBM3") == (500.0, "flag")
    assert peak_flops.resolve_peak(7.5, "cpu") == (7.5, "flag")
    assert peak_flops.resolve_peak(None, "TPU v4") == (275.0, "table: TPU v4 bf16 dense")


# --------------------------------------------------------------------------- the script
# The flags are the script's: it is exec'd in a subprocess and parses them with absl.
_FLAGS_SCRIPT = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("benchmark", sys.argv[1])
bm = importlib.util.module_from_spec(spec); sys.modules["benchmark"] = bm; spec.loader.exec_module(bm)
peaks = []
for flag in sys.argv[2:]:
    bm.flags.FLAGS.unparse_flags()
    bm.flags.FLAGS(["benchmark", flag])
    peaks.append(bm.options_from_flags().peak_tflops)
print(json.dumps(peaks))
"""


def test_peak_flag_and_its_alias():
    out = _check(_run("-c", _FLAGS_SCRIPT, SCRIPT, "--peak_tflops=123", "--peak_tflops_per_device=45", "--steps=2"))
    assert json.loads(out.strip().splitlines()[-1]) == [123.0, 45.0, 0.0]


@pytest.mark.parametrize("problem", ["missing", "garbled", "not_a_report", "no_config"])
def test_script_error_is_one_line(report_files, tmp_path, problem):
    """The script's bad input: `error: <message>` alone on stderr, exit 2, no traceback."""
    bad = tmp_path / "bad.json"
    if problem == "garbled":
        bad.write_text('{"measurements": [')
    elif problem == "not_a_report":
        bad.write_text('{"hardware": {}}')
    if problem == "no_config":
        proc, expected = _run(SCRIPT, timeout=120), "error: --config=configs/<name>.py is required (or --compare"
    else:
        proc = _run(SCRIPT, "--compare", report_files[0], str(bad), timeout=120)
        expected = "error: benchmark --compare: "
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(expected), proc.stderr
    if problem != "no_config":
        assert str(bad) in errors[0]


# --------------------------------------------------------------------------- --compare
def _measurement(name: str, seconds: float, flops: float, peak_bytes: int | None) -> Measurement:
    return Measurement(
        name=name,
        description="test row",
        batch_size=8,
        audio_seconds_per_item=1.5,
        input_shapes={"audio": [8, 64, 2]},
        lower_seconds=0.25,
        compile_seconds=2.0,
        step_seconds=[seconds, seconds * 1.1, seconds * 0.9],
        flops_per_device=flops,
        peak_bytes_in_use=peak_bytes,
        compiled_memory=None,
    )


def _report(device_kind: str, options: Options, measurements: list[Measurement]) -> dict[str, Any]:
    hardware = dict(
        hardware_info(), device_kind=device_kind, host_load_average_before=None, host_load_average_after=None
    )
    config = config_summary(vae_tiny.get_config(), "configs/vae_tiny.py", {})
    return build_report(hardware, config, options, {"window_samples": 64}, {"autoencoder": 1000}, measurements)


@pytest.fixture(scope="module")
def report_files(tmp_path_factory):
    """Two reports in the format run_benchmark writes (build_report over Measurement objects, the
    real hardware_info of this process with the device kind replaced), without compiling anything."""
    directory = tmp_path_factory.mktemp("compare")
    a, b = str(directory / "a.json"), str(directory / "b.json")
    reports = (
        _report(
            "NVIDIA H100 80GB HBM3",
            Options(batch_size=8),
            [_measurement("encode", 0.2, 98.9e12, 2**30), _measurement("train/generator", 0.4, 3e13, 3 * 2**30)],
        ),
        _report(
            "TPU v5 lite",
            Options(batch_size=8),
            [_measurement("encode", 0.1, 19.7e12, None), _measurement("decode", 0.3, 1e13, None)],
        ),
    )
    for path, r in zip((a, b), reports):
        with open(path, "w") as f:
            json.dump(r, f, indent=2)
    return a, b


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """(measurement, figure) -> [A, B, B/A] from the comparison table, cut at the columns of
    its dash line (a measurement's name is on its block's first row only)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("measurement"))
    spans = [m.span() for m in re.finditer(r"-+", lines[start + 1])]
    rows, name = {}, None
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in spans]
        name = cells[0] or name
        rows[(name, cells[1])] = cells[2:]
    return rows


def test_report_files_have_the_table_peaks(report_files):
    with open(report_files[0]) as f:
        a = json.load(f)
    assert a["peak"] == {"tflops_per_device": 989.0, "source": "table: H100 bf16 dense"}
    encode = a["measurements"][0]
    assert encode["median_seconds"] == pytest.approx(0.2)
    assert encode["mfu"] == pytest.approx(98.9e12 / 0.2 / 1e12 / 989.0)  # 0.5


def test_compare(report_files, capsys):
    a, b = report_files
    compare_main([a, b])
    out = capsys.readouterr().out
    assert f"A: {a}" in out and f"B: {b}" in out
    assert "device_kind='NVIDIA H100 80GB HBM3'" in out and "device_kind='TPU v5 lite'" in out
    assert "peak: 989 TFLOP/s per device (table: H100 bf16 dense)" in out
    assert "peak: 197 TFLOP/s per device (table: TPU v5e bf16 dense)" in out
    rows = _rows(out)
    assert rows[("encode", "median step s")] == ["0.2000", "0.1000", "0.500"]
    assert rows[("encode", "clips/s")] == ["40.000", "80.000", "2.000"]
    assert rows[("encode", "TFLOP/s/dev")] == ["494.5000", "197.0000", "0.398"]
    assert rows[("encode", "MFU")] == ["50.00%", "100.00%", "2.000"]
    assert rows[("encode", "peak mem")] == ["1.00 GiB", "n/a", "n/a"]
    assert rows[("encode", "compile s")] == ["2.00", "2.00", "1.000"]
    # Only in A, only in B: n/a on the other side.
    assert rows[("train/generator", "median step s")] == ["0.4000", "n/a", "n/a"]
    assert rows[("decode", "median step s")] == ["n/a", "0.3000", "n/a"]


def test_compare_usage_errors(report_files):
    with pytest.raises(UserError, match="--compare takes two report files"):
        compare_main([report_files[0]])


def test_embedder_rows():
    """`configs/embedders.py`: a row per evaluation embedder, audio s/s under its metric's protocol
    (PaSST: a 10 s window every 5 s stands for 5 s); the public sizes' parameter counts."""
    counts = param_counts(_config("embedders"))
    assert counts == {"openl3": 4_689_860, "passt": 85_748_495}
    config = _config(
        "embedders", {"embedders.passt.embed_dim": 64, "embedders.passt.depth": 1, "embedders.passt.num_heads": 1}
    )
    config.embedders.names = ("passt",)
    report, out = _benchmark(config, Options(batch_size=1, steps=1, warmup=0, num_devices=1))
    (row,) = report["measurements"]
    assert row["name"] == "embed/passt" and row["input_shapes"] == {"input_0": [1, 320000]}
    assert row["audio_seconds_per_second"] == pytest.approx(5.0 / row["median_seconds"])
    assert "embed/passt" in out
    config.embedders.names = ("vggish",)
    with pytest.raises(BenchmarkUsageError, match="unknown \\['vggish'\\]"):
        run_benchmark(config, Options(batch_size=1, steps=1, warmup=0, num_devices=1))


def test_paper_suite_smoke_runs_every_row_and_compares(tmp_path):
    """`--suite=paper --smoke`: every row of the paper table on the tiny configs, one JSON that
    `--compare` reads; the suite's own bad flags are one line each."""
    from tests.bad_input import run_script

    out = tmp_path / "suite.json"
    args = ["--suite=paper", "--smoke", "--steps=1", "--warmup=0", "--per_device_batch=1", "--num_devices=1"]
    result = run_script("launch/benchmark.py", *args, f"--output_json={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["suite"] == "paper" and report["smoke"] is True
    assert [r["row"] for r in report["runs"]] == [
        "sa1_unet_train",
        "sao_dit_train",
        "sa1_generate",
        "sao_generate",
        "sao_vae_codec",
    ]
    names = {m["name"] for m in report["measurements"]}
    assert {
        "sa1_unet_train/train/diffusion",
        "sao_dit_train/train/diffusion",
        "sa1_generate/sample/2_steps",
        "sao_generate/sample/2_steps",
        "sao_generate/sample/2_steps_pingpong",
        "sao_vae_codec/encode",
        "sao_vae_codec/decode",
    } <= names
    assert all(m["median_seconds"] > 0 for m in report["measurements"])
    assert "sao_generate/sample/2_steps_pingpong" in result.stdout and "smoke" in result.stdout
    compared = run_script("launch/benchmark.py", "--compare", str(out), str(out))
    assert compared.returncode == 0 and "sa1_generate/sample/2_steps" in compared.stdout, compared.stderr[-2000:]
    for extra, message in (
        (["--suite=nope"], "unknown suite 'nope'"),
        (["--suite=paper", "--config=configs/vae_tiny.py"], "drop --config"),
        (["--suite=paper", "--per_device_batch=0"], "--per_device_batch must be >= 1"),
    ):
        bad = run_script("launch/benchmark.py", *extra)
        last = [line for line in bad.stderr.splitlines() if line.strip()][-1]
        assert bad.returncode == 2 and message in last and last.startswith("error: "), (extra, bad.stderr[-2000:])
