"""Clip classifiers: callables from clips to class probabilities.

A clip classifier is any callable ``clips -> probs`` where ``clips`` is a float tensor
``[N, F, C, H, W]`` in ``[0, 1]`` (F frames, C = 1 or 3) and ``probs`` a cpu float32 tensor
``[N, len(labels)]`` whose rows sum to 1; it has ``labels``. Three kinds here, none needing
downloaded weights but the CLIP one:

- `motion_classifier(kind)`: the global motion of a clip from frame-to-frame correlation computed
  as phase correlation is, through the frames' cross power spectrum (`motion_estimate`: pixels
  per frame, sub-pixel; `mean_velocity`: the clip's, from all frame pairs at once).
  ``"directions"``: static, up, down, left, right (the dominant axis of the mean velocity;
  static below ``min_speed`` pixels per frame); ``"moving"``: static or moving; ``"speed"``:
  static, slow, or fast (from ``fast_speed`` pixels per frame on).
- `frames_classifier(image_classifier, frame=None)`: any image classifier (a CLIP zero-shot
  one, `classifiers.clip_zero_shot`) on every frame, probabilities averaged over frames, or on
  one chosen frame.
- `joint_classifier(a, b)`: two classifiers at once, labels the pairs ``"a|b"``, probabilities
  the products (so the argmax is the pair of argmaxes); `joint_features` gives one feature per
  factor, so one run measures the motion window and the appearance window side by side.

Example::

    motion = motion_classifier("directions")
    probs = motion(clips)                    # [N, 5]: static, up, down, left, right
    both = joint_classifier(motion, frames_classifier(clip_zero_shot(["a cat", "a dog"], ...)))
"""
from __future__ import annotations

import math

import torch

from .features import Feature

__all__ = ["MOTIONS", "motion_estimate", "mean_velocity", "motion_classifier", "frames_classifier", "joint_classifier",
           "joint_features", "check_clips"]

# motion label sets: name -> labels (the unit vector each direction stands for: (dy, dx), rows down)
MOTIONS = {
    "directions": ("static", "up", "down", "left", "right"),
    "moving": ("static", "moving"),
    "speed": ("static", "slow", "fast"),
}
_UNIT = {"up": (-1.0, 0.0), "down": (1.0, 0.0), "left": (0.0, -1.0), "right": (0.0, 1.0)}


def check_clips(clips) -> torch.Tensor:
    """``clips`` as a float tensor ``[N, F, C, H, W]`` (ValueError naming the bad shape otherwise)."""
    if not torch.is_tensor(clips) or clips.ndim != 5:
        raise ValueError(f"clips shape {tuple(getattr(clips, 'shape', ()))} is not [N, F, C, H, W]")
    if clips.shape[2] not in (1, 3):
        raise ValueError(f"clips shape {tuple(clips.shape)}: frames must have 1 or 3 channels")
    return clips.float()


def _subpixel(c_m, c_0, c_p) -> torch.Tensor:
    """The vertex offset of a parabola through three samples of a peak (in ``[-0.5, 0.5]``)."""
    den = c_m - 2 * c_0 + c_p
    off = torch.where(den.abs() > 1e-12, 0.5 * (c_m - c_p) / den, torch.zeros_like(den))
    return off.clamp(-0.5, 0.5)


MAX_SIDE = 64       # frames are box-averaged down to at most this many pixels a side (speed kept in pixels)
UPSAMPLE = 4        # the correlation is evaluated on a grid of 1 / UPSAMPLE pixels
WHITEN = 0.0        # cross power divided by its magnitude to this power (1: phase correlation, 0: plain
                    # correlation: whitening amplifies noise at the frequencies a clip lacks; on smooth
                    # scenes with noise 0.05, 0.5 and 1 misread shifts by up to a pixel, 0 by 0.26)


def _frames(clips) -> tuple:
    """Grey frames ``[N, F, H, W]`` (float64, box-averaged by ``factor`` to at most `MAX_SIDE`), factor."""
    x = check_clips(clips).mean(dim=2)
    factor = max(1, math.ceil(max(x.shape[-2:]) / MAX_SIDE))
    if factor > 1:
        n, f = x.shape[:2]
        pooled = torch.nn.functional.avg_pool2d(x.reshape(n * f, 1, *x.shape[-2:]), factor)
        x = pooled.reshape(n, f, *pooled.shape[-2:])
    return x.double(), factor


def _window(h: int, w: int) -> torch.Tensor:
    if min(h, w) <= 2:
        return torch.ones(h, w, dtype=torch.float64)
    return torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                       torch.hann_window(w, periodic=False, dtype=torch.float64))


def _cross(x) -> torch.Tensor:
    """Cross power spectra of consecutive frames ``[N, F - 1, H, W]`` (mean removed, Hann window,
    partly whitened)."""
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) * _window(*x.shape[-2:])
    spec = torch.fft.fft2(x)
    cross = spec[:, 1:] * spec[:, :-1].conj()
    return cross / cross.abs().clamp_min(1e-12) ** WHITEN


def _upsampled(spec) -> torch.Tensor:
    """The inverse FFT of ``spec`` ``[..., H, W]`` on a grid `UPSAMPLE` times finer (zero-padded)."""
    h, w = spec.shape[-2:]
    u = UPSAMPLE
    big = torch.zeros(*spec.shape[:-2], h * u, w * u, dtype=spec.dtype)
    y0, x0 = (h * u) // 2 - h // 2, (w * u) // 2 - w // 2
    big[..., y0:y0 + h, x0:x0 + w] = torch.fft.fftshift(spec, dim=(-2, -1))
    return torch.fft.ifft2(torch.fft.ifftshift(big, dim=(-2, -1))).real


def _peak(cross) -> torch.Tensor:
    """The shift ``(dy, dx)`` in pixels at the peak of the correlation of each cross spectrum
    ``[..., H, W]``: evaluated on a 1 / `UPSAMPLE` pixel grid, divided by the window's own
    correlation (the overlap of the two windowed frames: without it the peak leans toward 0),
    refined by a parabola per axis."""
    h, w = cross.shape[-2:]
    u = UPSAMPLE
    win = torch.fft.fft2(_window(h, w).to(torch.complex128))
    overlap = _upsampled(win * win.conj())
    corr = _upsampled(cross) / overlap.clamp_min(0.05 * float(overlap.max()))
    lead, (hh, ww) = corr.shape[:-2], corr.shape[-2:]
    flat = corr.reshape(-1, hh * ww)
    idx = flat.argmax(dim=-1)
    py, px = idx // ww, idx % ww
    take = lambda dy, dx: flat.gather(1, (((py + dy) % hh) * ww + (px + dx) % ww)[:, None])[:, 0]  # noqa: E731
    c0 = take(0, 0)
    oy, ox = _subpixel(take(-1, 0), c0, take(1, 0)), _subpixel(take(0, -1), c0, take(0, 1))
    wrap = lambda p, size: torch.where(p >= (size + 1) // 2, p - size, p).double()  # noqa: E731
    out = torch.stack([(wrap(py, hh) + oy) / u, (wrap(px, ww) + ox) / u], dim=-1)
    return out.reshape(*lead, 2)


def motion_estimate(clips) -> torch.Tensor:
    """Global motion ``[N, F - 1, 2]``: the shift ``(dy, dx)`` in pixels from each frame to the next
    (``dy > 0``: content moves down, ``dx > 0``: right), from the correlation of the two frames
    (grey, mean removed, Hann-windowed, partly whitened), its peak found to 1 / `UPSAMPLE` pixel and
    refined by a parabola. Shifts are within half the frame size."""
    x, factor = _frames(clips)
    if x.shape[1] < 2:
        raise ValueError(f"clips shape {tuple(clips.shape)}: motion needs at least 2 frames")
    return (_peak(_cross(x)) * factor).float()


def mean_velocity(clips) -> torch.Tensor:
    """The clip's mean shift per frame ``[N, 2]`` (pixels per frame): the peak of the correlations of
    all consecutive frame pairs summed (a constant velocity assumed; robust to noise)."""
    x, factor = _frames(clips)
    if x.shape[1] < 2:
        raise ValueError(f"clips shape {tuple(clips.shape)}: motion needs at least 2 frames")
    return (_peak(_cross(x).sum(dim=1)) * factor).float()


class MotionClassifier:
    """Motion labels of clips from `motion_estimate` (module docstring). The scores are the mean
    velocity's projection on each direction (``"directions"``) or its speed (``"moving"``),
    against ``min_speed`` for static; probabilities a softmax of scores / ``temperature``."""

    def __init__(self, kind: str = "directions", *, min_speed: float = 0.25, fast_speed: float = 1.5,
                 temperature: float = 0.1):
        if kind not in MOTIONS:
            raise ValueError(f"motion {kind!r} is not one of {', '.join(MOTIONS)}")
        if not min_speed > 0 or not temperature > 0 or not fast_speed > min_speed:
            raise ValueError(f"min_speed {min_speed!r} and temperature {temperature!r} must be > 0, and fast_speed "
                             f"{fast_speed!r} above min_speed")
        self.kind, self.labels = kind, MOTIONS[kind]
        self.min_speed, self.fast_speed, self.temperature = float(min_speed), float(fast_speed), float(temperature)

    def velocity(self, clips) -> torch.Tensor:
        """Mean shift per frame ``[N, 2]`` (``dy, dx``, pixels per frame)."""
        return mean_velocity(clips)

    def __call__(self, clips) -> torch.Tensor:
        v = self.velocity(clips)
        static = torch.full((v.shape[0], 1), self.min_speed)
        if self.kind == "moving":
            scores = torch.cat([static, v.norm(dim=1, keepdim=True)], dim=1)
        elif self.kind == "speed":  # each score is positive exactly in its own speed range
            s, lo, hi = v.norm(dim=1, keepdim=True), self.min_speed, self.fast_speed
            scores = torch.cat([lo - s, torch.minimum(s - lo, hi - s), s - hi], dim=1)
        else:
            units = torch.tensor([_UNIT[d] for d in self.labels[1:]])
            scores = torch.cat([static, v @ units.T], dim=1)
        return (scores / self.temperature).softmax(dim=1).float()

    def __repr__(self):
        return f"MotionClassifier({self.kind!r}, min_speed={self.min_speed})"


def motion_classifier(kind: str = "directions", *, min_speed: float = 0.25,
                      fast_speed: float = 1.5) -> MotionClassifier:
    """The motion classifier ``kind`` (one of `MOTIONS`; module docstring); speeds in pixels per frame."""
    return MotionClassifier(kind, min_speed=min_speed, fast_speed=fast_speed)


class FramesClassifier:
    """An image classifier on a clip's frames: probabilities averaged over frames, or of one ``frame``."""

    def __init__(self, image_classifier, frame: int | None = None):
        self.image_classifier, self.frame = image_classifier, frame
        self.labels = tuple(image_classifier.labels)

    def __call__(self, clips) -> torch.Tensor:
        clips = check_clips(clips)
        n, f = clips.shape[:2]
        if self.frame is not None:
            if not -f <= self.frame < f:
                raise ValueError(f"frame {self.frame} is outside the clips' {f} frames")
            return torch.as_tensor(self.image_classifier(clips[:, self.frame])).float().cpu()
        probs = torch.as_tensor(self.image_classifier(clips.reshape(n * f, *clips.shape[2:]))).float().cpu()
        return probs.reshape(n, f, -1).mean(dim=1)

    def __repr__(self):
        return f"FramesClassifier({self.image_classifier!r}, frame={self.frame})"


def frames_classifier(image_classifier, frame: int | None = None) -> FramesClassifier:
    """``image_classifier`` on clips (module docstring)."""
    return FramesClassifier(image_classifier, frame)


class JointClassifier:
    """Two classifiers at once: labels ``"a|b"`` in row-major order, probabilities the products."""

    def __init__(self, first, second):
        self.parts = (first, second)
        self.labels = tuple(f"{a}|{b}" for a in first.labels for b in second.labels)

    def __call__(self, clips) -> torch.Tensor:
        p, q = (torch.as_tensor(c(clips)).float().cpu() for c in self.parts)
        return (p[:, :, None] * q[:, None, :]).reshape(p.shape[0], -1)


def joint_classifier(first, second) -> JointClassifier:
    """``first`` and ``second`` as one classifier (module docstring)."""
    return JointClassifier(first, second)


def joint_features(joint: JointClassifier, names=("motion", "appearance")) -> tuple:
    """One `Feature` per factor of ``joint``: a value per label of that factor, holding every pair
    with it."""
    first, second = (tuple(c.labels) for c in joint.parts)
    k = len(second)
    motion = Feature(names[0], {a: tuple(i * k + j for j in range(k)) for i, a in enumerate(first)})
    appearance = Feature(names[1], {b: tuple(i * k + j for i in range(len(first))) for j, b in enumerate(second)})
    return motion, appearance
