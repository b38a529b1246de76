"""Import shim: the registry's torchaudio wheels are CUDA builds that cannot load on CPU torch.

stable-audio-tools only needs `torchaudio.transforms.Resample`, and the parity fixtures keep
sample rates equal, so the shim's Resample is the identity and refuses anything else.
hear21passt (the PaSST fixture) needs `compliance.kaldi` and builds SpecAugment transforms it
only applies in training; `compliance/` loads the real kaldi module when `$TORCHAUDIO_KALDI` is set.
"""

import os

from . import transforms  # noqa: F401

if os.environ.get("TORCHAUDIO_KALDI"):  # hear21passt's mel filterbank (compliance/__init__.py)
    from . import compliance  # noqa: F401
