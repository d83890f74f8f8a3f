"""Tests of benchmarks: each benchmark runs and prints what it measures."""
