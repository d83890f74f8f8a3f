"""Tests of stages: what dvc.yaml runs."""
