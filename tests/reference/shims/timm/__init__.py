"""Import shim: hear21passt imports timm only for `download_cached_file` (pretrained weights),
and timm's package import needs torchvision; the fixtures use random weights and download nothing."""
