"""Tests of inference: both predictors."""
