"""Write the fixed digits split that the default's theory and tests read: ``assets/digits/``.

scikit-learn ships its 1,797 8x8 handwritten digits (pixel values 0..16) offline; the
toolkit's fixed stratified split (25% held out, seed 0) is taken here, once, and stored as
safetensors (uint8, ~115 kB) so that the default run needs no scikit-learn at run time.
`diffusion_windows.diffusion.default.digits_split()` reads the file; `sklearn_digits_split()` below is
the split's definition, and a test checks that the file equals it.

    python experiments/export_digits_split.py        # needs scikit-learn (pip install -e ".[train]")
"""
from __future__ import annotations

import numpy as np
from safetensors.numpy import save_file

from diffusion_windows.diffusion import default


def sklearn_digits_split():
    """(train_pixels, train_labels, test_pixels, test_labels): uint8 arrays, pixels [N, 8, 8] in 0..16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=default.TEST_FRACTION, stratify=digits.target,
                                   random_state=default.SPLIT_SEED)
    pixels = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    return pixels[train], labels[train], pixels[test], labels[test]


def main():
    train_x, train_y, test_x, test_y = sklearn_digits_split()
    path = default.assets_path() / default.DIGITS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"train_pixels": train_x, "train_labels": train_y, "test_pixels": test_x, "test_labels": test_y},
              str(path), metadata={"source": "sklearn.datasets.load_digits", "test_fraction": str(default.TEST_FRACTION),
                                   "split_seed": str(default.SPLIT_SEED), "pixel_max": "16"})
    print(f"{path}: {len(train_y)} train, {len(test_y)} held out")


if __name__ == "__main__":
    main()
