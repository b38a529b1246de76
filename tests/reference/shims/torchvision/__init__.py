"""Import shim: no CPU torchvision wheel exists here; k-diffusion and transformers only import it."""

from . import io, transforms  # noqa: F401
