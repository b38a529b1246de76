"""Benchmarks of a config (compile and step time, throughput, FLOPs, memory): the library of `launch/benchmark.py`."""
