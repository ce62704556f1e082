import subprocess
import zlib

import numpy as np
import pytest
import torch

from tests.helpers import call_main, run_cli


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id (a CRC, the same in every process, unlike ``hash``):
    reproducible, and independent between tests."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True, scope="session")
def torch_on_one_thread():
    """Every test computes on one thread, as the commands under test do (OMP_NUM_THREADS=1): the tests'
    networks are small, and on a shared 2-core machine two threads per process made some tests ten to
    thirty times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """One thread for this test (every test has it already: see ``torch_on_one_thread``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["main", pytest.param("command", marks=pytest.mark.cli)])
def run_evaluate(request, capsys):
    """``evaluate.py ARGS`` as a CompletedProcess: through its ``main`` in this process (fast), and as a
    command in a subprocess (marker ``cli``)."""
    def run(*args) -> subprocess.CompletedProcess:
        if request.param == "command":
            return run_cli(["evaluate.py", *args], timeout=60)
        import evaluate
        code, out, err = call_main(evaluate.main, capsys, *args)
        return subprocess.CompletedProcess(["evaluate.py", *args], code, out, err)
    return run
