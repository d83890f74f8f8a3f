"""Tests of data: sources, archives, synthesis, splits, the processed split files."""
