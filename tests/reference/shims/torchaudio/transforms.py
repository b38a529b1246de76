import torch


class Resample(torch.nn.Module):
    def __init__(self, orig_freq: int = 16000, new_freq: int = 16000, *args, **kwargs):
        super().__init__()
        if orig_freq != new_freq:
            raise NotImplementedError("the torchaudio shim only resamples between equal rates")

    def forward(self, x):
        return x
