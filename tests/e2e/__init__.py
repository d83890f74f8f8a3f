"""End-to-end tests: the whole pipeline through real DVC, its reliability under kills and bad input, and its plots
in a real browser."""
