"""Throughput benchmarks (see throughput.py)."""
