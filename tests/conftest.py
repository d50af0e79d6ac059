"""Fixtures shared by the test modules, and what lets the suite run on two processes
(`pytest -n 2 --dist loadfile`, pytest-xdist): a module's tests stay in one process with their
module fixtures; the shared digits run is trained once for all processes; a test marked `alone`
(it asserts seconds, or runs two processes of its own) has the machine to itself."""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil

import pytest

try:
    # timm (the `timm` extra, test_timm.py's peer) before TensorFlow: torch's triton, which timm's
    # torchvision loads, crashes the process (SIGSEGV in its LLVM) when it loads after TensorFlow.
    import timm  # noqa: F401  (imported for its side effect: loaded first)
except ImportError:
    pass


def shared_dir(basetemp):
    """The folder every process of this pytest run sees: `basetemp` itself, or under pytest-xdist
    (a worker's basetemp is the run's popen-gwN) its parent."""
    return basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp


@contextlib.contextmanager
def locked(path, mode):
    """Hold the advisory lock `mode` (fcntl.LOCK_SH or LOCK_EX) on the file `path` for the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# The modules that take minutes in CI (pytest --durations), longest first. Under pytest-xdist each
# module runs in one process; starting the long ones first lets the two processes end together.
LONG_MODULES = ("test_faults.py", "test_qat.py", "test_timm.py", "test_training.py", "test_docs.py", "test_qat_recipe.py",
                "test_sources.py", "test_multi_worker_faults.py", "test_distill.py")


def pytest_collection_modifyitems(config, items):
    """The long modules first, in LONG_MODULES' order; each module's own order is kept."""
    items.sort(key=lambda item: LONG_MODULES.index(item.path.name) if item.path.name in LONG_MODULES
               else len(LONG_MODULES))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist, every test holds a shared lock for its setup, call and teardown (module
    fixtures included), and an `alone` test an exclusive one: it waits for the test in flight in the
    other process, which starts its next test only when it is done."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return (yield)
    path = shared_dir(pathlib.Path(item.config.option.basetemp)) / "alone.lock"
    with locked(path, fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH):
        return (yield)


@pytest.fixture(scope="session", autouse=True)
def kernels_dir(tmp_path_factory):
    """One folder of native training kernels (mobilenet_tf/kernels) for the whole run, every process
    and every training subprocess: compiled once, not once per fresh cache directory."""
    folder = shared_dir(tmp_path_factory.getbasetemp()) / "kernels"
    os.environ["MOBILENET_TF_KERNELS_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A fresh cache directory (MOBILENET_TF_CACHE) per test module: the digits are materialized there."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """(model_dir, training's metrics) of one V2-0.35 digits run of 20 epochs (about 0.95 held-out
    top-1: enough for int8 and the demo's answers to mean something; training wrote export/1),
    trained once for the modules that need a trained run, by whichever pytest-xdist process asks
    first (the others wait for it). Take a `copy_of` it before writing there."""
    root = shared_dir(tmp_path_factory.getbasetemp()) / "digits_run"
    root.mkdir(exist_ok=True)
    done = root / "metrics.json"
    with locked(root / "lock", fcntl.LOCK_EX):
        if not done.exists():
            import keras

            from mobilenet_tf import config, train

            cfg = config.replace(config.DIGITS, model={"alpha": 0.35}, data={"cache_dir": str(root / "cache")},
                                 train={"epochs": 20, "model_dir": str(root / "run"), "log_steps": 0})
            metrics = train.train(cfg)
            keras.backend.clear_session()
            done.write_text(json.dumps(metrics))
    return root / "run", json.loads(done.read_text())


def copy_of(run_dir, tmp_path_factory):
    """A copy of the run in `run_dir` that a module may write to (exports, reports)."""
    copy = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(run_dir, copy)
    return copy
