import enum

import torch

from . import functional, v2  # noqa: F401


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class _Unavailable:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise NotImplementedError("torchvision transforms are not available in the parity shim")


class Resize(torch.nn.Module):
    """torchvision >= 0.17's `Resize(size)` on a float tensor `[..., H, W]` (laion-clap's fusion
    shrinks a mel with it): `interpolate(mode="bilinear", align_corners=False, antialias=True)`."""

    def __init__(self, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
        super().__init__()
        if interpolation != InterpolationMode.BILINEAR or max_size is not None or len(size) != 2:
            raise NotImplementedError("the torchvision shim resizes tensors to (H, W) bilinearly only")
        self.size, self.antialias = list(size), antialias

    def forward(self, img):
        batched = img.reshape(-1, 1, *img.shape[-2:])
        out = torch.nn.functional.interpolate(
            batched, size=self.size, mode="bilinear", align_corners=False, antialias=self.antialias
        )
        return out.reshape(*img.shape[:-2], *self.size)


Compose = CenterCrop = ToTensor = Normalize = RandomResizedCrop = _Unavailable
