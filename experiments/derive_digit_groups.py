"""Derive the coarse digit feature "group" of `features.GROUP_FEATURE`.

    python experiments/derive_digit_groups.py

Ward agglomerative clustering (scipy) of the ten class-mean images of the training
split of `default.digits_split()` (pixel space, 64 dims). Prints the merge tree and
the partitions into 2 and 3 groups, and checks the 3-group partition against the
hard-coded `GROUP_FEATURE` (exit status 1 if they differ).

Why this should give nested windows: at large noise only coarse structure of an image
survives (for a mixture, the distances between component means set when components
separate, THEORY.md), so digits whose means lie close together are expected to be told
apart late in generation and distant groups early; the sweep measures whether they are. Ward's 2-group cut ({4,6} vs the rest) is
unbalanced (20% / 80%); the 3-group cut is the coarse feature.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusion_windows.diffusion import default  # noqa: E402
from diffusion_windows.features import GROUP_FEATURE  # noqa: E402


def ward_groups(images: np.ndarray, labels: np.ndarray, n_groups: int) -> list[tuple[int, ...]]:
    """Partition of the classes into n_groups by Ward clustering of the class means."""
    classes = np.unique(labels)
    means = np.stack([images[labels == c].reshape((labels == c).sum(), -1).mean(0) for c in classes])
    cut = fcluster(linkage(means, method="ward"), n_groups, criterion="maxclust")
    groups = [tuple(int(c) for c in classes[cut == k]) for k in np.unique(cut)]
    return sorted(groups)


def main():
    train_x, train_y, _, _ = default.digits_split()
    images, labels = train_x.numpy(), train_y.numpy()
    means = np.stack([images[labels == c].reshape(-1, 64).mean(0) for c in range(10)])
    tree = linkage(means, method="ward")
    names = {i: (i,) for i in range(10)}
    print("Ward merges of the class means (members, distance):")
    for k, (a, b, dist, _) in enumerate(tree):
        names[10 + k] = names[int(a)] + names[int(b)]
        print(f"  {sorted(names[10 + k])}  {dist:.3f}")
    for n in (2, 3, 4):
        print(f"{n} groups: {ward_groups(images, labels, n)}")
    derived = ward_groups(images, labels, 3)
    shipped = sorted(GROUP_FEATURE.values.values())
    print(f"GROUP_FEATURE: {shipped}  matches: {derived == shipped}")
    return 0 if derived == shipped else 1


if __name__ == "__main__":
    sys.exit(main())
