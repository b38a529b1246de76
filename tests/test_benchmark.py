"""launch/benchmark.py: parameter counts without allocation, and a tiny end-to-end run.

The script runs in subprocesses (it defines absl flags at import, which would clash with
other launch scripts imported into this process). They inherit the 8 fake CPU devices of
conftest.py, so the tiny run also exercises the batch sharding over a real mesh.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "launch", "benchmark.py")

# A shrunken tiny VAE (2 stages, 4 channels, one small FFT per loss) so that compiling the
# two training phases takes seconds on 2 cores; the code paths are those of the full model.
TINY_OVERRIDES = [
    "--config.model.encoder_channels=4", "--config.model.decoder_channels=4",
    "--config.model.strides=(2,4)", "--config.model.encoder_multipliers=(1,2,4)",
    "--config.model.decoder_multipliers=(1,2,4)", "--config.model.latent_dim=8",
    "--config.discriminator.filters=4", "--config.discriminator.n_ffts=(64,)",
    "--config.discriminator.hop_lengths=(16,)", "--config.discriminator.win_lengths=(64,)",
    "--config.loss.stft.fft_sizes=(64,)", "--config.loss.stft.hop_sizes=(16,)",
]


def _run(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc


def _check(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_params_only_sao():
    out = _check(_run(SCRIPT, "--config=configs/vae_sao.py", "--params_only"))
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if line.startswith("  ") and len(line.split()) == 2}
    assert lines["autoencoder"] == "156,112,514"
    encoder, decoder = (int(lines[k].replace(",", "")) for k in ("encoder", "decoder"))
    assert encoder + decoder == 156_112_514
    assert int(lines["discriminator"].replace(",", "")) > 0


def test_params_only_clap_paper_size():
    """The paper-size text tower is RoBERTa-base's encoder: 124,645,632 parameters with a
    50,265-token vocabulary (see text_encoder.expected_num_params for the formula)."""
    out = _check(_run(SCRIPT, "--config=configs/clap_sa1.py", "--params_only"))
    lines = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in out.splitlines()
             if line.startswith("  ") and len(line.split()) == 2}
    assert lines["text_encoder"] == 124_645_632
    assert lines["audio_encoder"] == 27_534_488  # HTSAT-tiny without the AudioSet head
    assert lines["clap"] == sum(lines[k] for k in ("text_encoder", "audio_encoder", "text_projection",
                                                   "audio_projection")) + 1  # + the temperature


def test_params_only_diffusion_paper_size():
    """The SA 1.0 U-Net: exactly 906,679,744 parameters (SPEC.md 3.1), plus the two
    513-row timing tables (2 x 513 x 768)."""
    out = _check(_run(SCRIPT, "--config=configs/diffusion_sa1.py", "--params_only"))
    lines = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in out.splitlines()
             if line.startswith("  ") and len(line.split()) == 2}
    assert lines["unet"] == 906_679_744
    assert lines["timing"] == 2 * 513 * 768
    assert lines["diffusion"] == lines["unet"] + lines["timing"]


_HELPERS = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("benchmark", sys.argv[1])
bm = importlib.util.module_from_spec(spec); sys.modules["benchmark"] = bm; spec.loader.exec_module(bm)
from configs import vae_sao, vae_sa1, vae_tiny

class Fake:
    def __init__(self, analysis): self.analysis = analysis
    def cost_analysis(self): return self.analysis

print(json.dumps({
    "sao": bm.vae_window_samples(vae_sao.get_config(), 1.5),
    "sa1": bm.vae_window_samples(vae_sa1.get_config(), 1.5),
    "tiny_short": bm.vae_window_samples(vae_tiny.get_config(), 0.01),
    "flops": [bm.xla_flops(Fake({"flops": 5.0})), bm.xla_flops(Fake([{"flops": 7.0}])),
              bm.xla_flops(Fake([])), bm.xla_flops(Fake(None))],
}))
"""


def test_helpers():
    out = _check(_run("-c", _HELPERS, SCRIPT))
    got = json.loads(out.strip().splitlines()[-1])
    assert got["sao"] == 67584  # ceil(1.5 * 44100) = 66150 -> 33 x 2048
    assert got["sa1"] == 66560  # -> 65 x 1024
    assert got["tiny_short"] == 2048  # 441 samples, raised to the largest FFT (2048)
    assert got["flops"] == [5.0, 7.0, None, None]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.json"
    proc = _run(SCRIPT, "--config=configs/vae_tiny.py", "--batch_size=8", "--seconds=0.001",
                "--steps=1", "--warmup=0", "--train_phases=generator,discriminator,generator_warmup",
                f"--output_json={path}", *TINY_OVERRIDES)
    out = _check(proc)
    with open(path) as f:
        return json.load(f), out


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
    assert report["derived"]["train_alternating_items_per_second"] > 0


def test_tiny_run_table(tiny_report):
    _, out = tiny_report
    assert "measurement" in out and "train/generator" in out and "TFLOP/s/dev" in out
    assert "backend=cpu" in out


def test_indivisible_batch_is_a_usage_error():
    proc = _run(SCRIPT, "--config=configs/vae_tiny.py", "--batch_size=3", "--steps=1", timeout=120)
    assert proc.returncode != 0
    assert "not divisible" in proc.stdout + proc.stderr
