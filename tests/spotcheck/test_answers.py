"""Normalisation, grouping, agreement, entropy."""

from __future__ import annotations

import math

import pytest

from monitor.spotcheck.answers import group_stats, normalize_answer, stats_from_distribution


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Yes.", "yes"),
        ("  NO!", "no"),
        ("Yes, there is a dog in the image.", "yes"),
        ("The two cats", "2 cats"),
        ("two cats", "2 cats"),
        ("Twenty-one", "21"),
        ("twenty one apples", "21 apples"),
        ("3.5 kg.", "3.5 kg"),
        ("A", "a"),  # a lone letter is a multiple-choice answer, kept
        ("an apple", "apple"),
        ("Red,  white & blue", "red white blue"),
        ("", ""),
    ],
)
def test_normalize(raw, norm):
    assert normalize_answer(raw) == norm


def test_normalize_rejects_non_strings():
    with pytest.raises(TypeError, match="answer must be a str"):
        normalize_answer(None)  # type: ignore[arg-type]


def test_agreement_and_entropy_over_groups():
    sampled = ["Two cats.", "2 cats", "the two cats", "three cats", "Two dogs"] + ["2 cats"] * 5
    s = group_stats("two cats", sampled)
    assert s.served_group == "2 cats"
    assert s.agreement == pytest.approx(8 / 10)
    assert s.groups == {"2 cats": 8.0, "3 cats": 1.0, "2 dogs": 1.0}
    expected = -(0.8 * math.log(0.8) + 2 * 0.1 * math.log(0.1))
    assert s.entropy == pytest.approx(expected)
    assert s.agrees_with_majority and s.majority_group == "2 cats"


def test_served_answer_outside_the_samples_disagrees():
    s = group_stats("no", ["yes"] * 7 + ["No."] * 3)
    assert s.agreement == pytest.approx(0.3)
    assert not s.agrees_with_majority and s.majority_group == "yes"
    same = group_stats("yes", ["Yes"] * 10)
    assert same.entropy == 0.0 and same.agreement == 1.0


def test_ties_count_as_agreeing_and_bad_masses_are_rejected():
    s = stats_from_distribution("b", {"a": 0.5, "b": 0.5})
    assert s.agrees_with_majority and s.majority_group == "b"
    with pytest.raises(ValueError, match="positive total"):
        stats_from_distribution("a", {"a": 0.0})
    with pytest.raises(ValueError, match="no sampled answers"):
        group_stats("a", [])


def test_free_text_groups_by_content_words():
    from monitor.spotcheck.answers import content_words

    same = ["A red circle and a blue star.", "There are a blue star and a red circle", "the image shows blue stars, red circles"]
    assert {content_words(a) for a in same} == {"blue circle red star"}
    assert content_words("two dogs") == content_words("There are 2 dogs.") == "2 dog"
    assert content_words("There is no dog") != content_words("There is a dog")  # a negation is content
    assert content_words("Yes, there is one.") == "yes" and content_words("the") == "the"
    s = group_stats("A red circle.", ["red circle", "There is a red circle", "a blue star", "red circles"],
                    key=content_words)
    assert s.agreement == 0.75 and s.served_group == "circle red" and s.agrees_with_majority


def test_word_support_is_the_share_of_samples_naming_each_served_word():
    from monitor.spotcheck.answers import word_support

    sampled = ["a red circle and a blue star", "red circle", "There is a red circle and a green square", "blue stars"]
    assert word_support("A red circle and a blue star.", sampled) == {"blue": 0.5, "circle": 0.75, "red": 0.75, "star": 0.5}
    assert word_support("Yes, there is.", ["yes", "no"]) == {} and word_support("red", []) == {}
