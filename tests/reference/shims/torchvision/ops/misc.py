"""Import shim: the name laion-clap imports; freezing batch norms is never used here."""

import torch


class FrozenBatchNorm2d(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("torchvision shim: FrozenBatchNorm2d is not available")
