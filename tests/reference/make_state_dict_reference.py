"""Writes the `torch.save` fixture for tests/test_state_dict.py (run once, with PyTorch).

    PYTHONPATH=tests/reference/shims $REFERENCE_PYTHON tests/reference/make_state_dict_reference.py

A Lightning-style checkpoint: a `state_dict` of tensors in several dtypes, one a
transposed (non-contiguous) view and two sharing one storage, next to objects the loader
must not import (an argparse Namespace, a custom class), and the expected values as NPZ.
"""

import argparse
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures")


class NotImportable:  # the loader must not try to import this module's code
    def __init__(self):
        self.x = 3


def main() -> None:
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    state = {
        "layer.weight": torch.nn.Parameter(torch.randn(3, 5)),
        "layer.bias": torch.randn(3).half(),
        "bf16": torch.randn(2, 3).bfloat16(),
        "steps": torch.arange(5, dtype=torch.int64),
        "flags": torch.tensor([True, False, True]),
        "transposed": base.t(),  # strides (1, 6) over base's storage
        "row_view": base[1],  # offset 6 into the same storage
    }
    ckpt = {
        "state_dict": state,
        "hyper_parameters": argparse.Namespace(lr=1e-4),
        "callbacks": NotImportable(),
        "epoch": 7,
    }
    torch.save(ckpt, os.path.join(OUT, "state_dict_lightning.ckpt"))
    expected = {
        k.replace(".", "__"): (v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy())
        for k, v in state.items()
    }
    np.savez(os.path.join(OUT, "state_dict_expected.npz"), **expected)


if __name__ == "__main__":
    main()
