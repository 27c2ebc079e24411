"""Outcome classifiers for text: specs by name, answer normalisation, open label sets and "other"."""
import pytest

from diffusion_windows.text.outcomes import OTHER, extract_answer, make_outcome, normalize_answer


@pytest.mark.parametrize("raw,expect", [
    (" 1,000 ", "1000"), ("3.0", "3"), ("3.50", "3.5"), ("-0.0", "0"), ("+7", "7"), ("$12$", "12"),
    ("Paris.", "paris"), ("  New   York ", "new york"), ("**B**", "b"), (".5", "0.5"), (None, None),
])
def test_normalize_answer(raw, expect):
    assert normalize_answer(raw) == expect


@pytest.mark.parametrize("text,expect", [
    ("so \\boxed{1,000} and later 7", "1000"),
    ("\\boxed{2} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),   # the last box, braces balanced
    ("The answer is 3.0.", "3"),
    ("the answer is: 42 apples\nbye 9", "42"),
    ("The answer is Paris. Or 5", "paris"),
    ("x 5 then 7.50 units", "7.5"),
    ("no number at all", None),
])
def test_answer_rule(text, expect):
    assert extract_answer(text) == expect


def test_open_labels_come_from_base_responses():
    outcome = make_outcome("answer").fit(["the answer is 3", "\\boxed{3.0}", "I get 4", "none", "so 1,000"])
    assert outcome.labels == ("3", "4", "1000", OTHER)   # most frequent first, then first seen
    assert outcome("2 + 1 = 3.00") == "3" and outcome("1000") == "1000"
    assert outcome("5") == OTHER and outcome("nothing") == OTHER   # unseen or no answer: other


def test_regex_first_group_or_whole_match():
    group = make_outcome(r"regex:world (\w+)").fit(["the world sea", "world land", "world sea x"])
    assert group.labels == ("sea", "land", OTHER)
    assert group("a world Sea") == "sea" and group("world moon") == OTHER and group("") == OTHER
    whole = make_outcome(r"regex:w\d").fit(["w1 w2", "w2"])
    assert whole.labels == ("w1", "w2", OTHER) and whole("x w2 w1") == "w2"


def test_choices_are_a_closed_set():
    outcome = make_outcome("choices:A,B,C")
    assert outcome.labels == ("a", "b", "c", OTHER) and outcome.fit(["d"]) is outcome
    assert outcome("I think B. The answer is (C)") == "c"   # the answer's choice wins
    assert outcome("maybe a or b") == "b"                    # else the last one named
    assert outcome("none of those") == OTHER


def test_correct_against_reference():
    outcome = make_outcome("correct")
    assert outcome.labels == ("correct", "incorrect")
    assert outcome("the answer is 1,000", reference="1000") == "correct"
    assert outcome("7", reference="1000") == "incorrect"
    assert outcome("no answer", reference="1000") == "incorrect"
    choice = make_outcome("correct:choices:a,b")
    assert choice("the answer is B", reference="b") == "correct"
    with pytest.raises(ValueError, match="needs the prompt's reference answer"):
        outcome("the answer is 3")


def test_callable_outcome():
    outcome = make_outcome(lambda text: "long" if len(text) > 3 else None).fit(["abcd", "ab"])
    assert outcome.labels == ("long", OTHER)
    assert outcome("abcdef") == "long" and outcome("a") == OTHER
    assert make_outcome(outcome) is outcome


@pytest.mark.parametrize("spec,match", [
    ("regx:a", "unknown outcome spec 'regx:a'"),
    ("regex:", "unknown outcome spec 'regex:'"),
    ("regex:(", "outcome spec 'regex:\\(': bad regular expression"),
    ("choices:a", "outcome spec 'choices:a': give two or more"),
    ("choices:a,A", "give two or more distinct choices"),
    ("answer:x", "unknown outcome spec 'answer:x'"),
    ("correct:correct", "cannot be another 'correct'"),
    (3, "a string or a callable, got int"),
])
def test_bad_specs_raise_one_line(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        make_outcome(spec)
    assert "\n" not in str(err.value)
