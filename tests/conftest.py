"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A fresh cache directory (MOBILENET_TF_CACHE) per test module: the digits are materialized there."""
    return tmp_path_factory.mktemp("cache")
