"""Classifiers and features: offline, tiny random models built in the test."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusion_windows import classifiers
from diffusion_windows.classifiers import (
    check_images,
    clip_zero_shot,
    from_callable,
    from_torch_model,
    preprocess_images,
)
from diffusion_windows.features import (
    DEFAULT_FEATURES,
    Feature,
    feature_values,
    labels_feature,
    validate_feature,
)

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 12, "patch_size": 4, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
LABELS = ("cat", "dog", "zebra", "house")


@pytest.fixture(scope="module")
def tiny_clip_name(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("clipcfg") / "dw-test-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    return "dw-test-tiny-clip"


@pytest.fixture(scope="module")
def random_clf(tiny_clip_name):
    torch.manual_seed(0)
    return clip_zero_shot(LABELS, model=tiny_clip_name, pretrained=None, templates=("a {}", "the {}."))


# --- clip_zero_shot on a randomly initialised open_clip model


def test_random_clip_probabilities_shape_and_labels(random_clf):
    assert random_clf.labels == LABELS
    images = torch.rand(5, 3, 20, 30)
    probs = random_clf(images)
    assert probs.shape == (5, len(LABELS))
    assert probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(5))


def test_random_clip_accepts_one_channel_any_size_and_batches(random_clf):
    gray = torch.rand(7, 1, 8, 8)
    full = random_clf(gray)
    rgb = random_clf(gray.expand(-1, 3, -1, -1).contiguous())
    torch.testing.assert_close(full, rgb)  # 1 channel is repeated to 3
    old = random_clf.batch_size
    random_clf.batch_size = 3  # three batches: same numbers up to float noise
    try:
        torch.testing.assert_close(random_clf(gray), full, atol=1e-5, rtol=1e-5)
    finally:
        random_clf.batch_size = old


def test_text_embeddings_computed_once_in_label_order(random_clf, tiny_clip_name):
    import open_clip

    # Rows follow label order: recompute the class embedding of each label by hand.
    tok = open_clip.get_tokenizer(tiny_clip_name)
    for i, label in enumerate(LABELS):
        with torch.no_grad():
            emb = F.normalize(random_clf.model.encode_text(tok([f"a {label}", f"the {label}."])), dim=-1)
        torch.testing.assert_close(random_clf.text_features[i], F.normalize(emb.mean(0), dim=-1))

    # Classifying never runs the text tower again.
    calls = []
    original = random_clf.model.encode_text
    random_clf.model.encode_text = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        random_clf(torch.rand(2, 3, 12, 12))
        random_clf(torch.rand(3, 1, 8, 8))
    finally:
        del random_clf.model.encode_text
    assert calls == []


def test_label_order_is_respected(tiny_clip_name):
    torch.manual_seed(0)
    a = clip_zero_shot(LABELS, model=tiny_clip_name, pretrained=None, templates="a {}")
    perm = (2, 0, 3, 1)
    b = classifiers.zero_shot_from_model(a.model, _tokenizer(tiny_clip_name),
                                         [LABELS[i] for i in perm], templates="a {}")
    x = torch.rand(4, 3, 12, 12)
    torch.testing.assert_close(b.logits(x), a.logits(x)[:, list(perm)], atol=1e-5, rtol=1e-5)


def _tokenizer(name):
    import open_clip

    return open_clip.get_tokenizer(name)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(3, 8, 8), "shape"),
        (torch.rand(2, 2, 8, 8), "channels"),
        (torch.rand(2, 1, 8, 8) * 2 - 1, r"\[0, 1\]"),
        (torch.ones(2, 1, 8, 8, dtype=torch.uint8), "float"),
    ],
)
def test_bad_images_raise(random_clf, bad, match):
    with pytest.raises(ValueError, match=match):
        random_clf(bad)


def test_bad_arguments_raise(tiny_clip_name):
    with pytest.raises(ValueError, match="no-such-model"):
        clip_zero_shot(LABELS, model="no-such-model", pretrained=None)
    with pytest.raises(ValueError, match="duplicate label 'cat'"):
        clip_zero_shot(("cat", "cat"), model=tiny_clip_name, pretrained=None)
    with pytest.raises(ValueError, match="placeholder"):
        clip_zero_shot(LABELS, model=tiny_clip_name, pretrained=None, templates=("a photo",))
    with pytest.raises(ValueError, match="does-not-exist"):
        clip_zero_shot(LABELS, model=tiny_clip_name, pretrained="/tmp/does-not-exist.safetensors")


def test_local_checkpoint_path_roundtrip(random_clf, tiny_clip_name, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in random_clf.model.state_dict().items()}, str(path))
    clf = clip_zero_shot(LABELS, model=tiny_clip_name, pretrained=str(path), templates=("a {}", "the {}."))
    x = torch.rand(3, 1, 10, 10)
    torch.testing.assert_close(clf(x), random_clf(x))


@pytest.mark.pretrained
@pytest.mark.skipif(os.environ.get("DW_PRETRAINED") != "1", reason="needs pretrained CLIP weights (DW_PRETRAINED=1)")
def test_pretrained_vit_b_32():
    clf = clip_zero_shot(("black", "white"), templates=("a {} square",))
    probs = clf(torch.stack([torch.zeros(3, 64, 64), torch.ones(3, 64, 64)]))
    assert probs.shape == (2, 2)
    assert probs.argmax(1).tolist() == [0, 1]


# --- preprocessing


def test_preprocess_resizes_and_normalises():
    x = torch.full((2, 1, 8, 8), 0.5)
    out = preprocess_images(x, 16, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out[:, 0], torch.zeros(2, 16, 16))
    torch.testing.assert_close(out[:, 1], torch.ones(2, 16, 16))
    torch.testing.assert_close(out[:, 2], torch.full((2, 16, 16), 0.5))
    # shortest side to 16, then centre crop: a wide image keeps its middle
    wide = torch.zeros(1, 1, 8, 16)
    wide[..., 4:12] = 1.0
    out = preprocess_images(wide, 8, (0.0,) * 3, (1.0,) * 3, resize_mode="shortest")
    assert out.shape == (1, 3, 8, 8) and out.min() > 0.9


def test_check_images_passes_valid():
    x = torch.rand(2, 3, 5, 7)
    assert check_images(x) is x


# --- wrapping functions and torch models


def test_from_callable_probabilities_and_logits():
    def fn(x):  # brightness -> two-way probability
        p = x.mean(dim=(1, 2, 3))
        return torch.stack([1 - p, p], dim=1)

    clf = from_callable(fn, ["dark", "bright"])
    assert clf.labels == ("dark", "bright")
    probs = clf(torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]))
    torch.testing.assert_close(probs, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))

    with pytest.raises(ValueError, match="logits=True"):
        from_callable(lambda x: 3 * fn(x), ["dark", "bright"])(torch.rand(2, 1, 4, 4))
    logit_clf = from_callable(lambda x: 3 * fn(x), ["dark", "bright"], logits=True)
    torch.testing.assert_close(logit_clf(torch.rand(3, 1, 4, 4)).sum(1), torch.ones(3))
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(2, 3\)"):
        from_callable(fn, ["a", "b", "c"])(torch.rand(2, 1, 4, 4))


def test_from_torch_model_selects_output_columns():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 6))
    clf = from_torch_model(net, ["b", "d", "a"], output_indices=[1, 3, 0], image_size=16, batch_size=2)
    x = torch.rand(5, 1, 8, 8)
    probs = clf(x)
    assert probs.shape == (5, 3)
    with torch.no_grad():
        logits = net(preprocess_images(x, 16, classifiers.IMAGENET_MEAN, classifiers.IMAGENET_STD,
                                       interpolation="bilinear"))
    torch.testing.assert_close(probs, logits[:, [1, 3, 0]].softmax(1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="output_indices has 2 entries for 3 labels"):
        from_torch_model(net, ["b", "d", "a"], output_indices=[1, 3])


# --- features


def test_default_features_partition_the_digits():
    names = [f.name for f in DEFAULT_FEATURES]
    assert names[:2] == ["digit", "group"]
    digit, group = DEFAULT_FEATURES[:2]
    assert digit.value_names == tuple(str(d) for d in range(10))
    assert all(digit.values[str(d)] == (d,) for d in range(10))
    members = sorted(i for v in group.values.values() for i in v)
    assert members == list(range(10))  # coarse values are a partition of the digits
    assert 2 <= len(group.values) < 10
    assert all(len(v) >= 2 for v in group.values.values())  # unions, coarser than digits


def test_feature_values_maps_labels():
    f = Feature("parity", {"even": (0, 2, 4), "odd": (1, 3)})
    out = feature_values(f, np.array([[0, 1], [4, 3], [2, 7]]))
    assert out.tolist() == [[0, 1], [0, 1], [0, -1]]  # 7 belongs to no value
    group = DEFAULT_FEATURES[1]
    v = feature_values(group, np.arange(10))
    for d in range(10):
        assert d in group.values[group.value_names[v[d]]]
    with pytest.raises(ValueError, match="integers"):
        feature_values(f, np.array([0.5]))


def test_labels_feature_and_validation():
    f = labels_feature(["a", "b", "c"])
    assert f.name == "label" and f.values == {"a": (0,), "b": (1,), "c": (2,)}
    with pytest.raises(ValueError, match="value 'y' overlaps value 'x'"):
        Feature("f", {"x": (0, 1), "y": (1, 2)})
    with pytest.raises(ValueError, match="value 'x' has label index -1"):
        Feature("f", {"x": (-1,)})
    with pytest.raises(ValueError, match="value 'e' contains no labels"):
        Feature("f", {"e": ()})
    with pytest.raises(ValueError, match=r"value 'x' has label index 3 out of range \(labels are 0..2\)"):
        validate_feature(Feature("f", {"x": (3,)}), num_labels=3)
    with pytest.raises(ValueError, match="duplicate label 'a'"):
        labels_feature(["a", "a"])


# --- prompt templates: labels that carry their own article


@pytest.mark.parametrize("template,label,want", [
    ("a photo of a {}.", "a red car", "a photo of a red car."),
    ("a photo of a {}.", "an old car", "a photo of an old car."),
    ("itap of a {}.", "the moon", "itap of the moon."),
    ("a {}", "a cat", "a cat"),
    ("a photo of a {}.", "car", "a photo of a car."),
    ("{}", "a red car", "a red car"),
    ("a photo of {}.", "a red car", "a photo of a red car."),
])
def test_format_prompt_never_doubles_an_article(template, label, want):
    assert classifiers.format_prompt(template, label) == want


def test_labels_with_articles_get_templates_without_one(tiny_clip_name):
    labels = ("a red car", "a blue car", "an old car")
    clf = clip_zero_shot(labels, model=tiny_clip_name, pretrained=None)
    assert clf.templates == classifiers.ARTICLE_TEMPLATES
    prompts = [classifiers.format_prompt(t, x) for t in clf.templates for x in labels]
    for p in prompts:
        words = p.lower().replace(".", "").split()
        assert not any(a in ("a", "an", "the") and b in ("a", "an", "the") for a, b in zip(words, words[1:])), p
        assert "small a" not in p and "large a" not in p, p
    bare = clip_zero_shot(("car", "boat"), model=tiny_clip_name, pretrained=None)
    assert bare.templates == classifiers.DEFAULT_TEMPLATES


def test_parse_templates(tmp_path):
    assert classifiers.parse_templates("plain") == ("{}",)
    assert classifiers.parse_templates("a photo of {}.|a drawing of {}.") == ("a photo of {}.", "a drawing of {}.")
    f = tmp_path / "t.txt"
    f.write_text("a photo of {}.\n\nart of {}\n")
    assert classifiers.parse_templates(str(f)) == ("a photo of {}.", "art of {}")
    assert classifiers.parse_templates(None) is None
    with pytest.raises(ValueError, match="'a photo' has no"):
        classifiers.parse_templates("a photo")
