"""Test-session set-up. Under pytest-xdist (``make test`` starts one worker per core), each worker, and every stage
it starts, runs torch and onnxruntime on one OpenMP thread: N workers with N threads each on N cores ran training 5 to
15 times slower here. Set before any test module imports torch, which reads the variable once.
"""

import collections
import os

if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(items: list) -> None:
    """The modules with the most end-to-end runs (tests marked ``slow``) first: ``make test`` hands whole modules to
    its workers in this order, and a long module handed out last would keep one worker busy while the others idle.
    """
    slow_tests = collections.Counter(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_tests[item.nodeid.split("::")[0]])
