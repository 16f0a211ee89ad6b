"""Shared fixtures: small clustered data sets and the shipped ones."""

from __future__ import annotations

import os
import warnings

import matplotlib

matplotlib.use("Agg")
warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("PYTENSOR_FLAGS", "")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from models.data import ClusteredData  # noqa: E402


@pytest.fixture
def unbalanced_frame() -> pd.DataFrame:
    """Three clusters of sizes 4, 1 (a singleton) and 2."""
    return pd.DataFrame({"g": ["a", "a", "a", "a", "b", "c", "c"],
                         "y": [1.0, 2.0, 4.0, 7.0, 3.0, 5.0, 6.5]})


@pytest.fixture
def unbalanced(unbalanced_frame) -> ClusteredData:
    return ClusteredData.from_frame(unbalanced_frame, group="g", response="y")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)
