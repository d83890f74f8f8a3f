"""Test-session set-up. Under pytest-xdist (``make test`` starts one worker per core), each worker, and every stage
it starts, runs torch and onnxruntime on one OpenMP thread: N workers with N threads each on N cores ran training 5 to
15 times slower here. Set before any test module imports torch, which reads the variable once.
"""

import os

if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
