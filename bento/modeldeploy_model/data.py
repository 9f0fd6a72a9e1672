"""Data sets and the train/validation/test split.

Why synthetic plus one bundled set: nothing may download at run time, and tests need data that
is small, deterministic and cheap. The room-price set is generated from a known function (with
non-linear terms, so tree and neural models have something to win over a linear one); the
diabetes set ships inside scikit-learn and keeps us honest on real, noisy data.

The data hash recorded in the model card is computed from the exact bytes the models saw, so a
card says unambiguously which data produced a model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modeldeploy_model import config

DATASETS = ("room_price", "diabetes")


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` (rows x features, float64) and target ``y``, with names."""

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str

    def data_hash(self) -> str:
        return _hash_arrays(self.X, self.y, self.feature_names)


@dataclass(frozen=True)
class Split:
    """The three splits. Preprocessing is fitted on ``X_train`` only (see train.py)."""

    dataset: str
    feature_names: tuple[str, ...]
    target_name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    data_hash: str

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            X_train=self.X_train,
            y_train=self.y_train,
            X_val=self.X_val,
            y_val=self.y_val,
            X_test=self.X_test,
            y_test=self.y_test,
            feature_names=np.array(self.feature_names),
            meta=np.array([self.dataset, self.target_name, self.data_hash]),
        )

    @classmethod
    def load(cls, path: Path) -> Split:
        with np.load(path, allow_pickle=False) as z:
            meta = [str(v) for v in z["meta"]]
            return cls(
                dataset=meta[0],
                target_name=meta[1],
                data_hash=meta[2],
                feature_names=tuple(str(v) for v in z["feature_names"]),
                X_train=z["X_train"],
                y_train=z["y_train"],
                X_val=z["X_val"],
                y_val=z["y_val"],
                X_test=z["X_test"],
                y_test=z["y_test"],
            )


def _hash_arrays(X: np.ndarray, y: np.ndarray, names: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    h.update("\x00".join(names).encode())
    return "sha256:" + h.hexdigest()


def room_price(n_samples: int = config.DEFAULT_ROOM_PRICE_SAMPLES, seed: int = config.DEFAULT_SEED,
               noise: float = 8.0) -> Dataset:
    """Synthetic flat prices (in thousands) from area (m^2), floor and renovation level (0..2).

    price = 25 + 2.8*area + 1.6*floor - 0.06*floor^2 + 12*renovation + 0.25*area*renovation + noise
    """
    if n_samples < 20:
        raise ValueError(f"n_samples must be at least 20 (got {n_samples})")
    rng = np.random.default_rng(seed)
    area = rng.uniform(18.0, 160.0, n_samples)
    floor = rng.integers(0, 25, n_samples).astype(np.float64)
    renovation = rng.integers(0, 3, n_samples).astype(np.float64)
    price = (
        25.0
        + 2.8 * area
        + 1.6 * floor
        - 0.06 * floor**2
        + 12.0 * renovation
        + 0.25 * area * renovation
        + rng.normal(0.0, noise, n_samples)
    )
    X = np.column_stack([area, floor, renovation])
    return Dataset("room_price", X, price, ("area", "floor", "renovation"), "price")


def scaled(ds: Dataset, factor: float) -> Dataset:
    """The data set with its labels multiplied by `factor`: a deliberate bug (a unit converted twice) for
    drift demos and tests. Every split carries it, so the quality gate, measured on the same labels,
    still passes: only a comparison with the previous model's predictions shows it."""
    return Dataset(ds.name, ds.X, ds.y * factor, ds.feature_names, ds.target_name)


def diabetes() -> Dataset:
    """scikit-learn's bundled diabetes regression set (442 rows, 10 features); no download."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return Dataset(
        "diabetes",
        np.asarray(bunch.data, dtype=np.float64),
        np.asarray(bunch.target, dtype=np.float64),
        tuple(str(n) for n in bunch.feature_names),
        "disease_progression",
    )


def load(name: str, n_samples: int = config.DEFAULT_ROOM_PRICE_SAMPLES,
         seed: int = config.DEFAULT_SEED) -> Dataset:
    if name == "room_price":
        return room_price(n_samples=n_samples, seed=seed)
    if name == "diabetes":
        return diabetes()
    raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")


def split(ds: Dataset, seed: int = config.DEFAULT_SEED, val_fraction: float = config.VALIDATION_FRACTION,
          test_fraction: float = config.TEST_FRACTION) -> Split:
    """Shuffle deterministically and cut into train / validation / test."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 0.9):
        raise ValueError("val_fraction and test_fraction must be in (0, 1) and leave >= 10% for training")
    n = len(ds.y)
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    test_idx, val_idx, train_idx = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return Split(
        dataset=ds.name,
        feature_names=ds.feature_names,
        target_name=ds.target_name,
        X_train=ds.X[train_idx],
        y_train=ds.y[train_idx],
        X_val=ds.X[val_idx],
        y_val=ds.y[val_idx],
        X_test=ds.X[test_idx],
        y_test=ds.y[test_idx],
        data_hash=ds.data_hash(),
    )
