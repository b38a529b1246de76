"""Paths of the reference fixtures in `tests/fixtures/` that several test modules read: the tiny
Stable Audio Open checkpoint in SAO's layout (`sao_small/`, written by stable-audio-tools,
`tests/reference/make_sao_model_reference.py`) and the tiny T5 Hugging Face folder (`t5_relu/`)."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CHECKPOINT = os.path.join(FIXTURES, "sao_small", "model.safetensors")
MODEL_CONFIG = os.path.join(FIXTURES, "sao_small", "model_config.json")
T5_DIR = os.path.join(FIXTURES, "t5_relu")
