"""Import shim: laion-clap's training/data.py imports it at module level; no dataset is used."""
