"""The bundled default model and classifier, loaded from the shipped assets, offline."""

import socket

import numpy as np
from pathlib import Path

import pytest
import torch

from diffusion_windows.diffusion import default
from diffusion_windows.features import DEFAULT_FEATURES, GROUP_FEATURE, feature_values


class _NoNetwork:
    """Context manager: any socket connection attempt raises."""

    def __enter__(self):
        self._connect = socket.socket.connect

        def refuse(*args, **kwargs):
            raise OSError("network access during an offline test")

        socket.socket.connect = refuse
        return self

    def __exit__(self, *exc):
        socket.socket.connect = self._connect


@pytest.fixture(scope="module")
def pipe():
    with _NoNetwork():
        p = default.load_default_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def clf():
    with _NoNetwork():
        return default.load_default_classifier()


@pytest.fixture(scope="module")
def split():
    return default.digits_split()


def test_assets_are_shipped_and_small():
    root = default.assets_path()
    expected = [
        "default_pipeline/model_index.json",
        "default_pipeline/scheduler/scheduler_config.json",
        "default_pipeline/unet/config.json",
        "default_pipeline/unet/diffusion_pytorch_model.safetensors",
        "tiny_clip/dw-digits-clip.json",
        "tiny_clip/open_clip_model.safetensors",
        "default_samples.png",
    ]
    for rel in expected:
        assert (root / rel).is_file(), rel
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    assert total < 30e6


def test_digits_split_is_fixed_and_stratified(split):
    train_x, train_y, test_x, test_y = split
    assert train_x.shape == (1347, 1, 8, 8) and test_x.shape == (450, 1, 8, 8)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert train_x.min() >= 0 and train_x.max() == 1.0  # pixel 16 -> 1.0
    assert train_x.mean() < 0.4  # ink bright on a dark background
    counts = torch.bincount(test_y, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47  # 25% of each class (~180)
    again = default.digits_split()
    assert torch.equal(again[0], train_x) and torch.equal(again[3], test_y)


def test_shipped_split_is_scikit_learns():
    """``assets/digits`` is the split `experiments/export_digits_split.py` takes from scikit-learn."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "export_digits_split", default.assets_path().parent / "experiments" / "export_digits_split.py")
    if spec is None or not Path(spec.origin).is_file():
        pytest.skip("experiments/ is not beside an installed package")
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    want = export.sklearn_digits_split()
    got = default.digits_split()
    assert torch.equal(got[0], torch.from_numpy(want[0]).float().unsqueeze(1) / 16)
    assert torch.equal(got[1], torch.from_numpy(want[1]).long())
    assert torch.equal(got[2], torch.from_numpy(want[2]).float().unsqueeze(1) / 16)
    assert torch.equal(got[3], torch.from_numpy(want[3]).long())


def test_pipeline_config(pipe):
    from diffusers import DDPMPipeline, DDPMScheduler

    assert isinstance(pipe, DDPMPipeline)
    assert isinstance(pipe.scheduler, DDPMScheduler)
    assert pipe.scheduler.config.num_train_timesteps == 1000
    assert pipe.unet.config.sample_size == 8
    assert pipe.unet.config.in_channels == pipe.unet.config.out_channels == 1
    assert pipe.device.type == "cpu"


def test_pipeline_samples_digits_at_100_steps(pipe, clf):
    gen = torch.Generator().manual_seed(0)
    out = pipe(batch_size=40, num_inference_steps=100, generator=gen, output_type="np").images
    assert out.shape == (40, 8, 8, 1)
    assert out.min() >= 0 and out.max() <= 1
    images = torch.from_numpy(out).permute(0, 3, 1, 2)
    assert images.mean() < 0.45  # dark background, bright ink
    probs = clf(images)
    assert probs.max(1).values.mean() > 0.7  # the classifier is confident: they are digits
    assert len(set(probs.argmax(1).tolist())) >= 6  # and not one digit only


def test_pipeline_defaults_are_the_full_ddpm_chain(pipe):
    # pipe(batch_size=n) with its own defaults runs all 1,000 DDPM steps (~20 s for a few
    # samples here, so not sampled in the tests; experiments/measure_default_quality.py
    # --steps 1000 measures those samples).
    import inspect

    assert inspect.signature(type(pipe).__call__).parameters["num_inference_steps"].default == 1000
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.scheduler.config.clip_sample is True


def test_classifier_heldout_accuracy(clf, split):
    _, _, test_x, test_y = split
    assert clf.labels == tuple(str(d) for d in range(10))
    probs = clf(test_x)
    assert probs.shape == (450, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(450))
    accuracy = (probs.argmax(1) == test_y).float().mean().item()
    assert accuracy >= 0.9


def test_classifier_any_size_and_channels(clf, split):
    # Smoothly upsampled 3-channel copies are the same digits. (Blocky nearest-neighbour
    # upsampling is out of the tiny CLIP's training distribution and fools it.)
    x, y = split[2][:40], split[3][:40]
    big = torch.nn.functional.interpolate(x, size=32, mode="bilinear").expand(-1, 3, -1, -1)
    probs = clf(big)
    assert probs.shape == (40, 10)
    assert (probs.argmax(1) == y).float().mean() >= 0.9


def test_group_feature_is_ward_clustering_of_class_means(split):
    from scipy.cluster.hierarchy import fcluster, linkage

    train_x, train_y = split[0].numpy(), split[1].numpy()
    means = np.stack([train_x[train_y == c].reshape(-1, 64).mean(0) for c in range(10)])
    cut = fcluster(linkage(means, method="ward"), 3, criterion="maxclust")
    derived = sorted(tuple(int(c) for c in np.flatnonzero(cut == k)) for k in np.unique(cut))
    assert derived == sorted(GROUP_FEATURE.values.values())
    assert [f.name for f in DEFAULT_FEATURES] == ["digit", "group"]
    assert feature_values(GROUP_FEATURE, np.array([4, 6])).tolist() == [2, 2]


def test_default_classifier_with_a_subset_of_digits(split):
    _, _, test_x, test_y = split
    clf = default.load_default_classifier(labels=("3", "8"))
    assert clf.labels == ("3", "8")
    keep = (test_y == 3) | (test_y == 8)
    pred = clf(test_x[keep]).argmax(1)
    truth = (test_y[keep] == 8).long()
    assert (pred == truth).float().mean() >= 0.9
