"""launch/benchmark.py: parameter counts without allocation, a tiny end-to-end run, the
diffusion forward rows with the reference-timing plumbing (a fake interpreter stands in
for torch, which CI lacks), the peak-TFLOP/s table behind MFU and the --compare mode.

The script runs in subprocesses (it defines absl flags at import, which would clash with
other launch scripts imported into this process). They inherit the 8 fake CPU devices of
conftest.py, so the tiny run also exercises the batch sharding over a real mesh.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from stable_audio_jax import peak_flops

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
    """The SA 1.0 U-Net: exactly 906,679,744 parameters (arXiv 2402.04825), plus the two
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
    "forward_frames": [bm.forward_latent_frames(s, 44100, 2048, 1) for s in (10, 47, 47.55)]
                      + [bm.forward_latent_frames(0.5, 44100, 64, 1024)],
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
    # ceil(s * 44100 / 2048): 215.3 -> 216, 1012.1 -> 1013, 1023.9 -> 1024 (SAO's window); the
    # U-Net rounds 345 frames up to its 1024x downsampling factor.
    assert got["forward_frames"] == [216, 1013, 1024, 1024]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.json"
    proc = _run(SCRIPT, "--config=configs/vae_tiny.py", "--batch_size=8", "--seconds=0.001",
                "--steps=1", "--warmup=0", "--train_phases=generator,discriminator,generator_warmup",
                "--peak_tflops=0.5",  # CPU is not in the peak table: the flag gives the MFU column
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
        if m["tflops_per_second_per_device"] is not None:
            assert m["mfu"] == pytest.approx(m["tflops_per_second_per_device"] / 0.5)
    assert report["derived"]["train_alternating_items_per_second"] > 0
    assert report["peak"] == {"tflops_per_device": 0.5, "source": "flag"}
    assert report["options"]["peak_tflops"] == 0.5


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
    mesh (batch 8, CFG batch 16) and the fake reference."""
    directory = tmp_path_factory.mktemp("forward")
    fake = _fake_interpreter(directory, _FAKE_REFERENCE)
    path = directory / "forward.json"
    out = _check(_run(SCRIPT, "--config=configs/dit_tiny.py", "--config.model.dit.depth=1", "--skip_train",
                      "--sample_steps=0", "--forward_seconds=0.1,0.25", "--batch_size=8", "--steps=2",
                      "--warmup=0", f"--reference_python={fake}", "--reference_threads=3",
                      f"--output_json={path}"))
    with open(path) as f, open(fake + ".json") as g:
        return json.load(f), out, json.load(g)


def test_forward_rows(forward_report):
    report, out, _ = forward_report
    by_name = {m["name"]: m for m in report["measurements"]}
    assert list(by_name) == ["forward/0.1s_cfg", "forward/0.25s_cfg", "reference/forward/0.1s_cfg",
                             "reference/forward/0.25s_cfg"]
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


def test_forward_reference_rows(forward_report):
    report, out, fake = forward_report
    by_name = {m["name"]: m for m in report["measurements"]}
    reference = by_name["reference/forward/0.25s_cfg"]
    assert reference["median_seconds"] == 0.5 and reference["step_seconds"] == [0.25, 0.5, 1.0]
    assert reference["input_shapes"] == {"x": [16, 32, 173], "cross_attn_cond": [16, 79, 128],
                                         "global_embed": [16, 256]}
    assert reference["audio_seconds_per_second"] == pytest.approx(8 * 173 * 64 / 44100 / 0.5)
    assert reference["compile_seconds"] is None and reference["flops_per_device"] is None
    ours = by_name["forward/0.25s_cfg"]["median_seconds"]
    assert report["derived"]["forward/0.25s_cfg median ours/reference"] == pytest.approx(ours / 0.5)
    section = report["hardware"]["reference"]
    assert section["torch_version"] == "9.9-fake" and section["threads"] == 3 and section["params"] == 12345
    # What the script was given: the DiT of the config, 77 text + 2 timing tokens, the frames.
    assert fake["script"].endswith(os.path.join("tests", "reference", "time_reference_dit.py"))
    assert fake["args"] == {"io_channels": "32", "embed_dim": "128", "depth": "1", "num_heads": "2",
                            "cond_token_dim": "128", "global_cond_dim": "256", "ff_mult": "4",
                            "text_tokens": "79", "frames": "69,173", "batch_size": "8", "steps": "2",
                            "warmup": "0", "threads": "3", "seed": "0"}
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

_RUN_REFERENCE = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("benchmark", sys.argv[1])
bm = importlib.util.module_from_spec(spec); sys.modules["benchmark"] = bm; spec.loader.exec_module(bm)
try:
    bm.run_reference_script(sys.argv[2], {"frames": "4"})
except bm.ReferenceRunError as e:
    print("ERROR", e)
"""


@pytest.mark.parametrize("case", ["fails", "no_json", "missing"])
def test_reference_failure_is_one_line(tmp_path, case):
    body = {"fails": _FAILING_REFERENCE, "no_json": "#!/bin/sh\necho not json; echo warning >&2\n"}.get(case)
    python = _fake_interpreter(tmp_path, body) if body else str(tmp_path / "nope")
    out = _check(_run("-c", _RUN_REFERENCE, SCRIPT, python)).strip().splitlines()[-1]
    assert out.startswith(f"ERROR reference timing with {python} ")
    if case == "fails":
        assert out.endswith("failed (exit 3): RuntimeError: out of memory")
    elif case == "no_json":
        assert "printed no JSON result" in out and "'not json'" in out and "'warning'" in out


def test_forward_usage_errors():
    unet = _run(SCRIPT, "--config=configs/diffusion_tiny.py", "--forward_seconds=1",
                f"--reference_python={sys.executable}", timeout=120)
    assert unet.returncode != 0 and "needs a DiT config" in unet.stderr
    vae = _run(SCRIPT, "--config=configs/vae_tiny.py", "--forward_seconds=1", timeout=120)
    assert vae.returncode != 0 and "--forward_seconds measures the diffusion model" in vae.stderr
    alone = _run(SCRIPT, "--config=configs/dit_tiny.py", f"--reference_python={sys.executable}", timeout=120)
    assert alone.returncode != 0 and "give both" in alone.stderr


def test_indivisible_batch_is_a_usage_error():
    proc = _run(SCRIPT, "--config=configs/vae_tiny.py", "--batch_size=3", "--steps=1", timeout=120)
    assert proc.returncode != 0
    assert "not divisible" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- peak table
@pytest.mark.parametrize("device_kind, label, tflops", [
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
])
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
    out = _check(_run("-c", _FLAGS_SCRIPT, SCRIPT, "--peak_tflops=123", "--peak_tflops_per_device=45",
                      "--steps=2"))
    assert json.loads(out.strip().splitlines()[-1]) == [123.0, 45.0, 0.0]


# --------------------------------------------------------------------------- --compare
# Two reports in the format run_benchmark writes (build_report over Measurement objects, the
# real hardware_info of this process with the device kind replaced), without compiling anything.
_WRITE_REPORTS = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("benchmark", sys.argv[1])
bm = importlib.util.module_from_spec(spec); sys.modules["benchmark"] = bm; spec.loader.exec_module(bm)
from configs import vae_tiny

def measurement(name, seconds, flops, peak_bytes):
    return bm.Measurement(name=name, description="test row", batch_size=8, audio_seconds_per_item=1.5,
                          input_shapes={"audio": [8, 64, 2]}, lower_seconds=0.25, compile_seconds=2.0,
                          step_seconds=[seconds, seconds * 1.1, seconds * 0.9], flops_per_device=flops,
                          peak_bytes_in_use=peak_bytes, compiled_memory=None)

def report(device_kind, options, measurements):
    hardware = dict(bm.hardware_info(), device_kind=device_kind, host_load_average_before=None,
                    host_load_average_after=None)
    return bm.build_report(hardware, bm.config_summary(vae_tiny.get_config()), options, {"window_samples": 64},
                           {"autoencoder": 1000}, measurements)

a = report("NVIDIA H100 80GB HBM3", bm.Options(batch_size=8),
           [measurement("encode", 0.2, 98.9e12, 2**30), measurement("train/generator", 0.4, 3e13, 3 * 2**30)])
b = report("TPU v5 lite", bm.Options(batch_size=8),
           [measurement("encode", 0.1, 19.7e12, None), measurement("decode", 0.3, 1e13, None)])
for path, r in zip(sys.argv[2:], (a, b)):
    with open(path, "w") as f:
        json.dump(r, f, indent=2)
"""


@pytest.fixture(scope="module")
def report_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("compare")
    a, b = str(directory / "a.json"), str(directory / "b.json")
    _check(_run("-c", _WRITE_REPORTS, SCRIPT, a, b))
    return a, b


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """(measurement, figure) -> [A, B, B/A] from the comparison table, cut at the columns of
    its dash line (a measurement's name is on its block's first row only)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("measurement"))
    spans = [m.span() for m in re.finditer(r"-+", lines[start + 1])]
    rows, name = {}, None
    for line in lines[start + 2:]:
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


def test_compare(report_files):
    a, b = report_files
    out = _check(_run(SCRIPT, "--compare", a, b, timeout=120))
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


@pytest.mark.parametrize("problem", ["missing", "garbled", "not_a_report"])
def test_compare_bad_file_is_one_error_line(report_files, tmp_path, problem):
    bad = tmp_path / "bad.json"
    if problem == "garbled":
        bad.write_text('{"measurements": [')
    elif problem == "not_a_report":
        bad.write_text('{"hardware": {}}')
    proc = _run(SCRIPT, "--compare", report_files[0], str(bad), timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: benchmark --compare: "), proc.stderr
    assert str(bad) in errors[0]


def test_compare_usage_errors(report_files):
    one_file = _run(SCRIPT, "--compare", report_files[0], timeout=120)
    assert one_file.returncode != 0 and "--compare takes two report files" in one_file.stderr
    neither = _run(SCRIPT, timeout=120)
    assert neither.returncode != 0 and "--config=configs/<name>.py is required (or --compare" in neither.stderr
