"""`torchaudio.compliance.kaldi`, the module hear21passt's front end calls (`get_mel_banks`),
loaded from the real torchaudio source file: its registry wheels' compiled extension does not
load beside this torch, but that module is plain Python. Point `$TORCHAUDIO_KALDI` at
`torchaudio/compliance/kaldi.py` of an unpacked torchaudio wheel (see the README's recipe)."""

import importlib.util
import os
import sys

_PATH = os.environ.get("TORCHAUDIO_KALDI", "")
if not os.path.isfile(_PATH):
    raise ImportError(f"set TORCHAUDIO_KALDI to torchaudio's compliance/kaldi.py (got {_PATH!r})")
_spec = importlib.util.spec_from_file_location("torchaudio.compliance.kaldi", _PATH)
kaldi = importlib.util.module_from_spec(_spec)
sys.modules["torchaudio.compliance.kaldi"] = kaldi
_spec.loader.exec_module(kaldi)
