"""Benchmarks (`make bench`); results and the machine they ran on are in bench/RESULTS.md."""
