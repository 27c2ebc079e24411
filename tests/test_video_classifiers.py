"""Clip classifiers: the motion classifier on synthetic clips of known shifts (four directions,
integer and sub-pixel, with noise; still clips static), the frames classifier (averaged and one
frame) and the joint classifier's labels, probabilities and features."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from diffusion_windows.features import feature_values
from diffusion_windows.video_classifiers import (MOTIONS, frames_classifier, joint_classifier, joint_features,
                                                 mean_velocity, motion_classifier, motion_estimate)

DIRECTIONS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


def scene(seed, size=96):
    return gaussian_filter(np.random.default_rng(seed).standard_normal((size, size)), 2.0)


def clip(velocity, seed=0, frames=8, size=32, noise=0.0, channels=3):
    """A smooth random scene seen through a fixed ``size`` window while it moves by ``velocity``
    (dy, dx) pixels per frame (a Fourier shift: exact for sub-pixel shifts too), plus noise."""
    big = scene(seed)
    ky, kx = np.fft.fftfreq(big.shape[0])[:, None], np.fft.fftfreq(big.shape[1])[None, :]
    spec = np.fft.fft2(big)
    out = []
    for f in range(frames):
        dy, dx = velocity[0] * f, velocity[1] * f
        shifted = np.fft.ifft2(spec * np.exp(-2j * np.pi * (ky * dy + kx * dx))).real
        out.append(shifted[32:32 + size, 32:32 + size])
    c = np.stack(out)
    c = (c - c.min()) / (c.max() - c.min())
    c = c + noise * np.random.default_rng(seed + 100).standard_normal(c.shape)
    return torch.tensor(np.repeat(c[:, None], channels, axis=1), dtype=torch.float32)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5, 1.5])
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_motion_direction_exact(direction, speed, noise):
    dy, dx = DIRECTIONS[direction]
    clips = torch.stack([clip((dy * speed, dx * speed), seed=s, noise=noise) for s in range(3)])
    motion = motion_classifier("directions")
    probs = motion(clips)
    assert probs.shape == (3, 5) and torch.allclose(probs.sum(1), torch.ones(3))
    assert [motion.labels[i] for i in probs.argmax(1)] == [direction] * 3
    assert [MOTIONS["moving"][i] for i in motion_classifier("moving")(clips).argmax(1)] == ["moving"] * 3
    v = mean_velocity(clips)
    assert torch.allclose(v, torch.tensor([dy * speed, dx * speed]).float().expand(3, 2), atol=0.15)


def test_integer_shifts_per_frame_and_diagonal_dominant_axis():
    est = motion_estimate(clip((0, 2), seed=4)[None])[0]
    assert est.shape == (7, 2)
    assert torch.allclose(est, torch.tensor([0.0, 2.0]).expand(7, 2), atol=0.1)
    # a diagonal motion is labelled by its larger component
    assert motion_classifier().labels[motion_classifier()(clip((0.4, -1.2), seed=5)[None]).argmax()] == "left"


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_still_clips_are_static(noise):
    clips = torch.stack([clip((0, 0), seed=s, noise=noise) for s in range(4)])
    for kind in MOTIONS:
        assert (motion_classifier(kind)(clips).argmax(1) == 0).all()  # label 0 is "static"
    assert mean_velocity(clips).abs().max() < 0.1


def test_large_frames_are_downsampled_and_keep_pixel_units():
    big = torch.nn.functional.interpolate(clip((0, 1), seed=6, size=32), scale_factor=4, mode="bilinear")
    v = mean_velocity(big[None])[0]
    assert abs(float(v[1]) - 4.0) < 1.0 and abs(float(v[0])) < 0.5


@pytest.mark.parametrize("speed, label", [(0.0, "static"), (0.5, "slow"), (1.0, "slow"), (2.0, "fast"),
                                          (3.0, "fast")])
def test_speed_classes(speed, label):
    clips = torch.stack([clip((speed * dy, speed * dx), seed=s, noise=0.05) for s, (dy, dx) in
                         enumerate(DIRECTIONS.values())])
    motion = motion_classifier("speed")
    assert [motion.labels[i] for i in motion(clips).argmax(1)] == [label] * 4


def test_bad_clips_and_options_refused():
    with pytest.raises(ValueError, match=r"is not \[N, F, C, H, W\]"):
        motion_classifier()(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2 frames"):
        motion_classifier()(torch.zeros(1, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="'spin' is not one of directions, moving, speed"):
        motion_classifier("spin")


class _Brightness:
    """An image classifier with a known answer: dark or bright frames."""

    labels = ("dark", "bright")

    def __call__(self, images):
        m = images.mean(dim=(1, 2, 3))
        return torch.stack([1 - m, m], dim=1)


def test_frames_classifier_averages_or_picks_a_frame():
    clips = torch.zeros(2, 4, 1, 8, 8)
    clips[0, :3] = 1.0  # three bright frames of four
    clips[1, 3] = 1.0   # the last frame bright
    avg = frames_classifier(_Brightness())(clips)
    assert torch.allclose(avg, torch.tensor([[0.25, 0.75], [0.75, 0.25]]))
    last = frames_classifier(_Brightness(), frame=-1)(clips)
    assert torch.allclose(last, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="frame 7 is outside"):
        frames_classifier(_Brightness(), frame=7)(clips)


def test_joint_classifier_is_the_product_and_its_features_the_factors():
    clips = torch.stack([clip((0, 1), seed=1), clip((-1, 0), seed=2) * 0.2, clip((0, 0), seed=3)])
    motion, bright = motion_classifier(), frames_classifier(_Brightness())
    joint = joint_classifier(motion, bright)
    assert joint.labels[:2] == ("static|dark", "static|bright") and len(joint.labels) == 10
    p = joint(clips)
    assert torch.allclose(p.sum(1), torch.ones(3), atol=1e-6)
    fm, fa = joint_features(joint)
    assert (fm.name, fa.name) == ("motion", "appearance")
    labels = p.argmax(1).numpy()
    assert list(feature_values(fm, labels)) == list(motion(clips).argmax(1).numpy())
    assert list(feature_values(fa, labels)) == list(bright(clips).argmax(1).numpy())
