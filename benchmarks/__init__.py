"""Benchmarks of backprop-lab: run them with ``python benchmarks/run.py`` (``make bench``)."""
