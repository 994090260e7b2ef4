"""Benchmark suite: `python -m bench` starts its own stack on loopback, runs bounded scenarios, writes a report."""
