"""Audio I/O, ArrayRecord shards and Grain pipelines."""
