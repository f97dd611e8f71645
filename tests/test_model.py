"""Model files: save/load round trip, no pickle, clear errors, atomic replacement."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile

import numpy as np
import pytest

import dclust
from dclust import ModelFormatError, StorageError
from dclust.io.model import FORMAT_VERSION


@pytest.fixture(scope="module")
def fitted():
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=600, n_features=4, centers=3, random_state=0)
    X = X.astype(np.float32)
    km = dclust.KMeans(3, random_state=0, n_init=1, max_iter=50, progress=False).fit(X)
    return km, X


def test_round_trip(tmp_path, fitted):
    km, X = fitted
    path = tmp_path / "model.npz"
    assert km.save(path) == str(path)
    km2 = dclust.load(path)
    assert type(km2) is dclust.KMeans
    np.testing.assert_array_equal(km2.cluster_centers_, km.cluster_centers_)
    assert km2.cluster_centers_.dtype == km.cluster_centers_.dtype
    assert km2.inertia_ == km.inertia_
    assert km2.n_iter_ == km.n_iter_
    assert km2.converged_ == km.converged_
    assert km2.n_features_in_ == km.n_features_in_
    assert km2.get_params() == km.get_params()
    np.testing.assert_array_equal(km2.predict(X), km.predict(X))
    assert os.listdir(tmp_path) == ["model.npz"]


def test_round_trip_str_path_and_overwrite(tmp_path, fitted):
    km, _ = fitted
    path = str(tmp_path / "model.npz")
    km.save(path)
    km.save(path)  # replacing an existing model is fine
    assert dclust.load(path).n_iter_ == km.n_iter_
    assert os.listdir(tmp_path) == ["model.npz"]


def test_round_trip_memory_url(fitted):
    import fsspec

    km, _ = fitted
    url = "memory://dclust-model-test/model.npz"
    try:
        km.save(url)
        np.testing.assert_array_equal(dclust.load(url).cluster_centers_, km.cluster_centers_)
    finally:
        fsspec.filesystem("memory").rm("/dclust-model-test", recursive=True)


def test_loads_without_pickle(tmp_path, fitted):
    km, _ = fitted
    path = tmp_path / "model.npz"
    km.save(path)
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["__dclust__"]))
        assert meta["format"] == "dclust-model"
        assert meta["format_version"] == FORMAT_VERSION
        assert meta["estimator"] == "KMeans"
        np.testing.assert_array_equal(npz["cluster_centers_"], km.cluster_centers_)
        for name in npz.files:
            assert npz[name].dtype != object


def test_unfitted_cannot_be_saved(tmp_path):
    with pytest.raises(dclust.NotFittedError, match=r"not fitted yet; call fit\(X\) first"):
        dclust.KMeans(2).save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_load_missing_file(tmp_path):
    p = str(tmp_path / "nope.npz")
    with pytest.raises(StorageError, match=re.escape(f"No model file at {p!r}: the path does not exist. Check the path")):
        dclust.load(p)


def test_load_random_bytes(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ModelFormatError, match=r"junk\.npz' is not a dclust model file .* Pass the path of a model saved by dclust"):
        dclust.load(p)


def test_load_empty_file(tmp_path):
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"empty\.npz' is not a dclust model file"):
        dclust.load(p)


def test_load_plain_npz(tmp_path):
    p = tmp_path / "plain.npz"
    np.savez(p, cluster_centers_=np.zeros((2, 3)))
    with pytest.raises(ModelFormatError, match=r"plain\.npz' is not a dclust model file \(expected an NPZ archive with dclust metadata"):
        dclust.load(p)


def test_load_plain_npy(tmp_path):
    p = tmp_path / "centres.npy"
    np.save(p, np.zeros((2, 3)))
    with pytest.raises(ModelFormatError, match=r"centres\.npy' is not a dclust model file"):
        dclust.load(p)


def test_load_pickled_npz_is_refused(tmp_path):
    p = tmp_path / "pickled.npz"
    np.savez(p, __dclust__=np.array([{"format": "dclust-model"}], dtype=object))
    with pytest.raises(ModelFormatError, match=r"pickled\.npz' is not a dclust model file"):
        dclust.load(p)


def _craft(path, meta, **arrays):
    buf = io.BytesIO()
    np.savez(buf, __dclust__=np.array(json.dumps(meta)), **arrays)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _meta(**over):
    meta = {"format": "dclust-model", "format_version": 1, "estimator": "KMeans",
            "params": {"n_clusters": 2}, "attributes": {}, "arrays": ["cluster_centers_"]}
    meta.update(over)
    return meta


def test_load_future_format_version(tmp_path):
    p = tmp_path / "future.npz"
    _craft(p, _meta(format_version=999), cluster_centers_=np.zeros((2, 3)))
    with pytest.raises(ModelFormatError, match=r"future\.npz' is a dclust model of format version 999, which this dclust \(.*\) cannot read \(it reads versions 1 to 1\)\. Upgrade dclust"):
        dclust.load(p)


@pytest.mark.parametrize("version", [0, "1", None, True])
def test_load_invalid_format_version(tmp_path, version):
    p = tmp_path / "bad.npz"
    _craft(p, _meta(format_version=version), cluster_centers_=np.zeros((2, 3)))
    with pytest.raises(ModelFormatError, match=re.escape(f"has an invalid dclust model format version {version!r}")):
        dclust.load(p)


def test_load_other_format_tag(tmp_path):
    p = tmp_path / "other.npz"
    _craft(p, _meta(format="something-else"))
    with pytest.raises(ModelFormatError, match="is not a dclust model file"):
        dclust.load(p)


def test_load_missing_array(tmp_path):
    p = tmp_path / "damaged.npz"
    _craft(p, _meta())  # lists cluster_centers_ but does not hold it
    with pytest.raises(ModelFormatError, match=r"damaged\.npz' is a damaged dclust model file \(KeyError: .*cluster_centers_.*\); save the model again"):
        dclust.load(p)


def test_load_incomplete_metadata(tmp_path):
    p = tmp_path / "damaged.npz"
    _craft(p, _meta(params=[1, 2]), cluster_centers_=np.zeros((2, 3)))
    with pytest.raises(ModelFormatError, match=r"damaged dclust model file \(its metadata is incomplete\)"):
        dclust.load(p)


def test_load_unknown_estimator(tmp_path):
    p = tmp_path / "other.npz"
    _craft(p, _meta(estimator="Spectral"), cluster_centers_=np.zeros((2, 3)))
    with pytest.raises(ModelFormatError, match=r"holds a model of type 'Spectral', which this dclust does not know; known types: .*KMeans"):
        dclust.load(p)


def test_load_folder(tmp_path):
    with pytest.raises(ModelFormatError, match=re.escape(f"{str(tmp_path)!r} is a folder, not a dclust model file. Pass the path of the file")):
        dclust.load(tmp_path)


def test_save_over_a_folder_is_refused(tmp_path, fitted):
    km, _ = fitted
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    target = str(tmp_path / "data")
    with pytest.raises(StorageError, match=re.escape(f"Cannot save the model to {target!r}: it is a folder. Pass a file path")):
        km.save(target)
    assert (tmp_path / "data" / "keep.txt").read_text() == "x"


def test_save_into_missing_folder(tmp_path, fitted):
    km, _ = fitted
    target = str(tmp_path / "nope" / "m.npz")
    with pytest.raises(StorageError, match=re.escape(f"the folder {os.path.dirname(target)!r} does not exist")):
        km.save(target)


def test_crash_in_savez_keeps_previous_model(tmp_path, fitted, monkeypatch):
    km, _ = fitted
    path = tmp_path / "model.npz"
    km.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        km.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_crash_while_writing_keeps_previous_model(tmp_path, fitted, monkeypatch):
    km, _ = fitted
    path = tmp_path / "model.npz"
    km.save(path)
    before = path.read_bytes()

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)  # after the temporary file was written
    with pytest.raises(OSError, match="No space left"):
        km.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]
    assert dclust.load(path).n_iter_ == km.n_iter_
