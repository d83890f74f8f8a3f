"""Tests of training: the loop, its options, early stopping, resume and data-parallel runs."""
