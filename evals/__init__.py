"""Dedup evaluations: split benchmarks into repeated and novel items and run models on them."""
