"""Fixtures shared by the test modules."""

import shutil

import pytest


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A fresh cache directory (MOBILENET_TF_CACHE) per test module: the digits are materialized there."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """(model_dir, training's metrics) of one V2-0.35 digits run of 20 epochs (about 0.95 held-out
    top-1: enough for int8 and the demo's answers to mean something; training wrote export/1),
    trained once for the modules that need a trained run. Take a `copy_of` it before writing there."""
    import keras

    from mobilenet_tf import config, train

    root = tmp_path_factory.mktemp("digits_run")
    cfg = config.replace(config.DIGITS, model={"alpha": 0.35}, data={"cache_dir": str(root / "cache")},
                         train={"epochs": 20, "model_dir": str(root / "run"), "log_steps": 0})
    metrics = train.train(cfg)
    keras.backend.clear_session()
    return root / "run", metrics


def copy_of(run_dir, tmp_path_factory):
    """A copy of the run in `run_dir` that a module may write to (exports, reports)."""
    copy = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(run_dir, copy)
    return copy
