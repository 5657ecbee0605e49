"""Latency statistics, local benchmarking, memory (and later energy, thermal, estimates)."""
