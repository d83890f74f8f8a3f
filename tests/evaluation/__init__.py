"""Tests of evaluation: scores and figures."""
