"""stable-audio-jax: Stable Audio (1.0, Open) in JAX/Flax linen, trained and sampled on device meshes.

One concept per sub-package; the README's "Layout" section lists them and the direction of
their imports (checked by tests/test_import_layers.py).
"""

__version__ = "0.1.0"
