"""The bundled video default (``--model default-video``): digits that move.

A clip is one of the bundled digits (8x8, `default.digits_split`) on a dark 16x16 canvas moving
one pixel per frame for `FRAMES` frames in one of four directions (`make_clips`): its direction
and its digit are known by construction. `experiments/train_default_video.py` trains a DDPM
(1,000 training timesteps, linear betas) on `training_clips()` and ships it in
``assets/default_video/``: a `VideoDDPMPipeline` folder (a diffusers ``UNet2DModel`` whose 8
input channels are the frames, and a ``DDPMScheduler``), model space ``2 x - 1`` (ink bright),
samples ``[N, 1, F, H, W]``.

Two features, read by `load_default_video_classifier`: the direction of motion (the exact motion
classifier, `video_classifiers.motion_classifier`) and the digit (the bundled tiny CLIP on each
frame's 8x8 window of most ink, probabilities averaged over frames), one joint classifier.
The theory's data are the training clips (`default_video_mixture`: an empirical mixture
labelled by the joint classifier's labels).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from diffusers import DiffusionPipeline

from ..bundled import asset
from .default import DIGIT_LABELS, digits_split

__all__ = ["FRAMES", "SIZE", "DIRECTIONS", "PER_DIGIT", "VIDEO_DIR", "VideoDDPMPipeline", "make_clips",
           "training_clips", "load_default_video_pipeline", "load_default_video_classifier", "default_video_features",
           "default_video_mixture", "DigitFrames"]

FRAMES, SIZE, DIGIT = 8, 16, 8
DIRECTIONS = ("up", "down", "left", "right")
PER_DIGIT = 40          # training digits per class (each in all four directions: 1,600 clips)
VIDEO_DIR = "default_video"


class VideoDDPMPipeline(DiffusionPipeline):
    """A DDPM on clips ``[N, channels, F, H, W]`` whose ``unet`` takes the frames as channels."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler, channels: int = 1):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(channels=channels)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, num_inference_steps: int = 20, generator=None):
        """Clips ``[N, F, C, H, W]`` in ``[0, 1]`` by ancestral DDPM sampling."""
        from diffusers.utils.torch_utils import randn_tensor

        c = int(self.config.channels)
        f, size = self.unet.config.in_channels // c, self.unet.config.sample_size
        x = randn_tensor((batch_size, c * f, size, size), generator=generator, device=self.device)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for t in self.scheduler.timesteps:
            x = self.scheduler.step(self.unet(x, t).sample, t, x, generator=generator).prev_sample
        return (x.reshape(batch_size, c, f, size, size).permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1)


def make_clips(images: torch.Tensor, directions) -> torch.Tensor:
    """Clips ``[N, FRAMES, 1, SIZE, SIZE]`` in ``[0, 1]``: each 8x8 image of ``images`` ``[N, 1, 8, 8]``
    moving one pixel per frame in its direction (an index into `DIRECTIONS`), centred across it."""
    n = len(images)
    clips = torch.zeros(n, FRAMES, 1, SIZE, SIZE)
    mid, far = (SIZE - DIGIT) // 2, SIZE - DIGIT
    for i, d in enumerate(int(v) for v in directions):
        for f in range(FRAMES):
            y, x = {0: (far - f, mid), 1: (f, mid), 2: (mid, far - f), 3: (mid, f)}[d]
            clips[i, f, :, y:y + DIGIT, x:x + DIGIT] = images[i]
    return clips


@lru_cache(maxsize=1)
def training_clips():
    """``(clips [N, F, 1, H, W] in [0, 1], digits [N], directions [N])``: the first `PER_DIGIT` training
    digits of each class, each moving in all four directions."""
    x, y, _, _ = digits_split()
    pick = torch.cat([torch.nonzero(y == d)[:PER_DIGIT, 0] for d in range(10)])
    images, digits = x[pick].repeat_interleave(4, 0), y[pick].repeat_interleave(4, 0)
    directions = torch.arange(4).repeat(len(pick))
    return make_clips(images, directions), digits, directions


def load_default_video_pipeline(device: str = "cpu") -> VideoDDPMPipeline:
    """The bundled `VideoDDPMPipeline`, loaded offline."""
    folder = asset(VIDEO_DIR, "model_index.json", "default video pipeline")
    pipe = VideoDDPMPipeline.from_pretrained(folder, use_safetensors=True, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class DigitFrames:
    """The bundled tiny CLIP on each frame's 8x8 window of most ink (the frame's background set to 0 and
    its brightest pixel to 1 first), probabilities averaged over frames."""

    def __init__(self, device: str = "cpu"):
        from .default import load_default_classifier

        self.clip = load_default_classifier(device=device)
        self.labels = tuple(self.clip.labels)

    @staticmethod
    def crops(frames: torch.Tensor) -> torch.Tensor:
        """``[M, C, H, W]`` -> the 8x8 window of most ink of each frame ``[M, C, 8, 8]``."""
        ink = torch.nn.functional.avg_pool2d(frames.mean(1, keepdim=True), DIGIT, stride=1)[:, 0]
        best = ink.reshape(len(frames), -1).argmax(1)
        ys, xs = best // ink.shape[-1], best % ink.shape[-1]
        return torch.stack([fr[:, y:y + DIGIT, x:x + DIGIT] for fr, y, x in zip(frames, ys.tolist(), xs.tolist())])

    @staticmethod
    def normalise(frames: torch.Tensor) -> torch.Tensor:
        """Each frame ``[M, C, H, W]`` rescaled so that its median (the background) is 0 and its maximum 1:
        a generated frame's background may be grey; a clean clip's frames stay as they are."""
        flat = frames.reshape(len(frames), -1)
        lo, hi = flat.median(dim=1).values, flat.max(dim=1).values
        scale = (hi - lo).clamp_min(1e-6)
        return ((frames - lo.view(-1, 1, 1, 1)) / scale.view(-1, 1, 1, 1)).clamp(0, 1)

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        from ..video_classifiers import check_clips

        clips = check_clips(clips)
        n, f = clips.shape[:2]
        frames = self.normalise(clips.reshape(n * f, *clips.shape[2:]))
        probs = torch.as_tensor(self.clip(self.crops(frames))).float()
        return probs.reshape(n, f, -1).mean(1)


def load_default_video_classifier(device: str = "cpu"):
    """The joint classifier of motion direction and digit (labels ``"direction|digit"``)."""
    from ..video_classifiers import joint_classifier, motion_classifier

    return joint_classifier(motion_classifier("directions"), DigitFrames(device))


def default_video_features(classifier) -> tuple:
    """The "motion" and "digit" features of the joint classifier."""
    from ..video_classifiers import joint_features

    return joint_features(classifier, names=("motion", "digit"))


@lru_cache(maxsize=1)
def default_video_mixture():
    """The training clips as an `EmpiricalMixture` in model space ``2 x - 1`` (``[C, F, H, W]`` flattened),
    labelled as the joint classifier labels them: ``(1 + direction) * 10 + digit``."""
    from ..theory import EmpiricalMixture

    clips, digits, directions = training_clips()
    points = (2.0 * clips.permute(0, 2, 1, 3, 4).reshape(len(clips), -1).double() - 1.0).numpy()
    return EmpiricalMixture(points, ((1 + directions) * len(DIGIT_LABELS) + digits).numpy())
