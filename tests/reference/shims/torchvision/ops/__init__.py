"""Import shim: laion-clap's `clap_module/utils.py` imports `FrozenBatchNorm2d` for its
`freeze_batch_norm_2d` helper, which the fixtures never call."""
