"""Features: named partitions of a classifier's labels.

A feature maps each of its value names to the classifier label indices it contains,
e.g. the coarse digit feature "group" has the value "4-6" = labels (4, 6). Label
indices a feature does not list belong to no value (`feature_values` returns -1 for
them), so a feature may be a coarse union of classes or a subset of them. The sweep
reads `DEFAULT_FEATURES` for the bundled default model (`default.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Feature",
    "DIGIT_FEATURE",
    "GROUP_FEATURE",
    "DEFAULT_FEATURES",
    "feature_values",
    "labels_feature",
    "validate_feature",
]


@dataclass(frozen=True)
class Feature:
    """A feature: `values` maps each value name to the label indices it contains."""

    name: str
    values: dict[str, tuple[int, ...]]

    def __post_init__(self):
        # Normalise to tuples of ints so that equality and JSON output are predictable.
        object.__setattr__(
            self, "values", {str(k): tuple(int(i) for i in v) for k, v in self.values.items()}
        )
        validate_feature(self)

    @property
    def value_names(self) -> tuple[str, ...]:
        """Value names in order; `feature_values` returns indices into this tuple."""
        return tuple(self.values)

    def to_dict(self) -> dict:
        """Plain JSON-ready form: {"name": ..., "values": {value: [label indices]}}."""
        return {"name": self.name, "values": {k: list(v) for k, v in self.values.items()}}


def validate_feature(feature: Feature, num_labels: int | None = None) -> None:
    """Raise ValueError naming the bad value for empty, overlapping or out-of-range values."""
    if not feature.name:
        raise ValueError("feature name must be a non-empty string")
    if not feature.values:
        raise ValueError(f"feature {feature.name!r} has no values")
    owner: dict[int, str] = {}
    for value, indices in feature.values.items():
        if not indices:
            raise ValueError(f"feature {feature.name!r}: value {value!r} contains no labels")
        for i in indices:
            if i < 0 or (num_labels is not None and i >= num_labels):
                bound = "" if num_labels is None else f" (labels are 0..{num_labels - 1})"
                raise ValueError(
                    f"feature {feature.name!r}: value {value!r} has label index {i} out of range{bound}"
                )
            if i in owner:
                raise ValueError(
                    f"feature {feature.name!r}: value {value!r} overlaps value {owner[i]!r} "
                    f"on label index {i}"
                )
            owner[i] = value


def feature_values(feature: Feature, label_index: np.ndarray) -> np.ndarray:
    """Map classifier label indices to indices of `feature.value_names` (-1: no value).

    `label_index` is an integer array of any shape (e.g. argmax of classifier probabilities).
    """
    label_index = np.asarray(label_index)
    if label_index.size and not np.issubdtype(label_index.dtype, np.integer):
        raise ValueError(f"label_index must be integers, got dtype {label_index.dtype}")
    top = max(max(v) for v in feature.values.values())
    lookup = np.full(top + 1, -1, dtype=np.int64)
    for j, indices in enumerate(feature.values.values()):
        lookup[list(indices)] = j
    out = np.full(label_index.shape, -1, dtype=np.int64)
    if label_index.size and label_index.min() < 0:
        raise ValueError(f"label_index contains negative index {int(label_index.min())}")
    inside = label_index <= top
    out[inside] = lookup[label_index[inside]]
    return out


def labels_feature(labels) -> Feature:
    """One feature named "label" with one value per classifier label, in label order."""
    labels = tuple(str(label) for label in labels)
    if len(set(labels)) != len(labels):
        dup = next(label for label in labels if labels.count(label) > 1)
        raise ValueError(f"duplicate label {dup!r}")
    return Feature("label", {label: (i,) for i, label in enumerate(labels)})


# --- The default model's features (labels "0".."9" of `default.load_default_classifier`).

DIGIT_FEATURE = Feature("digit", {str(d): (d,) for d in range(10)})

# Coarse feature: the three clusters of Ward agglomerative clustering of the ten class-mean
# images of the training split (`default.digits_split()`), computed by
# `experiments/derive_digit_groups.py`. The Ward tree merges {1,8}, {3,9}, then {2,1,8},
# {5,3,9}, {4,6}, {7,2,1,8}, {0,5,3,9}; cutting it at three clusters gives the groups below.
# Digits in one group share much of their mean ink pattern, so the group is decided earlier
# in generation (larger timestep) than the digit within it: the default shows nested windows.
GROUP_FEATURE = Feature(
    "group",
    {
        "0-3-5-9": (0, 3, 5, 9),
        "1-2-7-8": (1, 2, 7, 8),
        "4-6": (4, 6),
    },
)

DEFAULT_FEATURES: tuple[Feature, ...] = (DIGIT_FEATURE, GROUP_FEATURE)
