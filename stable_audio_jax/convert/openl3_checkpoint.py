"""torchopenl3 weights (`torchopenl3_<repr>_<content>_<size>.pth.tar`) -> `models.openl3.OpenL3` params.

    tensors = load_state_dict("torchopenl3_mel256_music_512.pth.tar")     # read without its pickle
    params = openl3_params_from_state_dict(StateDictReader(tensors, path), OpenL3Config())

The files come from https://github.com/torchopenl3/torchopenl3-models (torchopenl3's
`get_model_path`); nothing is downloaded here. Key mapping (PytorchOpenl3's module names):

    batch_normalization_1.*                    -> bn_0/{scale, bias, mean, var}
    conv2d_{2b+1}.weight (O, I, 3, 3) / .bias  -> conv_{b}_0/kernel (3, 3, I, O) / bias     b = 0..3
    batch_normalization_{2b+2}.*               -> bn_{b}_0
    conv2d_{2b+2}, batch_normalization_{2b+3}  -> conv_{b}_1, bn_{b}_1                       b = 0..2
    audio_embedding_layer.*                    -> embedding
    speclayer.mel_basis                        (buffer: checked against `openl3.mel_basis`)
    speclayer.dft_{real,imag}_kernels          (buffers of the fixed STFT: shape-checked)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stable_audio_jax import parallel
from stable_audio_jax.convert.state_dict import ConversionError, StateDictReader, check_tree
from stable_audio_jax.models import openl3

Params = dict[str, Any]


def _batch_norm(reader: StateDictReader, key: str, width: int) -> Params:
    reader.skip(f"{key}.num_batches_tracked")
    return {
        "scale": reader.take(f"{key}.weight", (width,)),
        "bias": reader.take(f"{key}.bias", (width,)),
        "mean": reader.take(f"{key}.running_mean", (width,)),
        "var": reader.take(f"{key}.running_var", (width,)),
    }


def _conv(reader: StateDictReader, key: str, fan_in: int, width: int) -> Params:
    kernel = reader.take(f"{key}.weight", (width, fan_in, 3, 3))
    return {"kernel": np.transpose(kernel, (2, 3, 1, 0)), "bias": reader.take(f"{key}.bias", (width,))}


def _check_front_end(reader: StateDictReader, config: openl3.OpenL3Config) -> None:
    bins = openl3.N_FFT // 2 + 1
    for key in ("speclayer.dft_real_kernels", "speclayer.dft_imag_kernels"):
        if reader.has(key):
            reader.take(key, (bins, 1, openl3.N_FFT))
    if reader.has("speclayer.mel_basis"):
        basis = reader.take("speclayer.mel_basis", (config.n_mels, bins))
        if not np.allclose(basis.T, openl3.mel_basis(config.n_mels), rtol=1e-4, atol=1e-7):
            raise ConversionError(
                f"{reader.source}: speclayer.mel_basis is not the {config.input_repr} HTK filterbank this port computes"
            )


def openl3_params_from_state_dict(reader: StateDictReader, config: openl3.OpenL3Config) -> Params:
    """The embedder's params from every key of `reader` (`ConversionError` naming any other key,
    a missing one or a wrong shape)."""
    params: Params = {"bn_0": _batch_norm(reader, "batch_normalization_1", 1)}
    fan_in, torch_conv, torch_bn = 1, 1, 2
    for block, width in enumerate(openl3._WIDTHS):
        params[f"conv_{block}_0"] = _conv(reader, f"conv2d_{torch_conv}", fan_in, width)
        params[f"bn_{block}_0"] = _batch_norm(reader, f"batch_normalization_{torch_bn}", width)
        torch_conv, torch_bn = torch_conv + 1, torch_bn + 1
        if block == len(openl3._WIDTHS) - 1:
            params["embedding"] = _conv(reader, "audio_embedding_layer", width, width)
            break
        params[f"conv_{block}_1"] = _conv(reader, f"conv2d_{torch_conv}", width, width)
        params[f"bn_{block}_1"] = _batch_norm(reader, f"batch_normalization_{torch_bn}", width)
        torch_conv, torch_bn, fan_in = torch_conv + 1, torch_bn + 1, width
    _check_front_end(reader, config)
    reader.finish()
    params = jax.tree.map(lambda a: np.ascontiguousarray(a, np.float32), params)
    check_tree(params, abstract_openl3_params(config), "OpenL3")
    return params


def abstract_openl3_params(config: openl3.OpenL3Config) -> Params:
    """The module's parameter shapes (nothing allocated)."""
    return parallel.abstract_params(openl3.OpenL3(config), jnp.zeros((1, openl3.FRAME_SAMPLES)))
