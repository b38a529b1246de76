import torch


class Resample(torch.nn.Module):
    def __init__(self, orig_freq: int = 16000, new_freq: int = 16000, *args, **kwargs):
        super().__init__()
        if orig_freq != new_freq:
            raise NotImplementedError("the torchaudio shim only resamples between equal rates")

    def forward(self, x):
        return x


class _TrainingOnlyMasking(torch.nn.Module):
    """hear21passt builds SpecAugment masks but applies them only in training mode; the
    reference scripts run it in eval mode, so these must never be called."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        raise NotImplementedError("the torchaudio shim has no SpecAugment: run the model in eval mode")


class FrequencyMasking(_TrainingOnlyMasking):
    pass


class TimeMasking(_TrainingOnlyMasking):
    pass
