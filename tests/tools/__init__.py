"""Tests of tools: the report and the offline plots template."""
