"""Training: the loop, data-parallel processes and resumable state."""
