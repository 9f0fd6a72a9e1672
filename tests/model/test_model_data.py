import numpy as np
import pytest

from modeldeploy_model import data


def test_room_price_is_deterministic_per_seed():
    a, b, c = data.room_price(300, seed=1), data.room_price(300, seed=1), data.room_price(300, seed=2)
    assert a.data_hash() == b.data_hash()
    assert a.data_hash() != c.data_hash()
    assert a.X.shape == (300, 3) and a.y.shape == (300,)
    assert a.feature_names == ("area", "floor", "renovation")
    assert set(np.unique(a.X[:, 2])) <= {0.0, 1.0, 2.0}


def test_room_price_follows_its_generating_function():
    ds = data.room_price(2000, seed=3, noise=0.0)
    area, floor, ren = ds.X.T
    expected = 25 + 2.8 * area + 1.6 * floor - 0.06 * floor**2 + 12 * ren + 0.25 * area * ren
    assert np.allclose(ds.y, expected)


def test_diabetes_ships_with_scikit_learn():
    ds = data.diabetes()
    assert ds.X.shape == (442, 10)
    assert len(ds.feature_names) == 10


def test_split_is_disjoint_and_complete():
    ds = data.room_price(500, seed=0)
    sp = data.split(ds, seed=0)
    assert len(sp.y_train) + len(sp.y_val) + len(sp.y_test) == 500
    rows = {tuple(r) for r in np.vstack([sp.X_train, sp.X_val, sp.X_test])}
    assert len(rows) == 500
    assert len(sp.y_test) == 100 and len(sp.y_val) == 100


def test_split_roundtrip(tmp_path):
    sp = data.split(data.room_price(100, seed=0))
    sp.save(tmp_path / "s.npz")
    back = data.Split.load(tmp_path / "s.npz")
    assert back.data_hash == sp.data_hash and back.feature_names == sp.feature_names
    assert np.array_equal(back.X_test, sp.X_test)


def test_unknown_dataset_names_choices():
    with pytest.raises(ValueError, match="room_price, diabetes"):
        data.load("mnist")
