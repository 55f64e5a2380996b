"""Quote verification: typography tolerated, fabrication rejected, spans exact."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petri_core.quotes import MIN_QUOTE_CHARS, closest_passage, elides, find_quote, normalize, source_words

PAGE = (
    "The council\u2019s report says: \u201cBike lanes cut car trips by 20 percent in 2025.\u201d\n"
    "Traffic on the ring road \u2014 measured by induction loops \u2014 did not rise.\n"
    "The study is robust to excluding the bridge-closure months, which yields a re-\n"
    "duction of 16 percent, and its authors do not claim any effect on air quality.\n"
    "Cost per kilo\u00admetre fell\u00a0sharply   over   the decade."
)


@pytest.mark.parametrize(
    "quote",
    [
        'The council\'s report says: "Bike lanes cut car trips by 20 percent in 2025."',
        "traffic on the RING ROAD - measured by induction loops - did not rise",
        "Traffic on the ring road – measured\nby induction loops – did not rise.",
        "which yields a reduction of 16 percent",
        "Cost per kilometre fell sharply over the decade",
        "The study is robust to excluding … a reduction of 16 percent",
        "The study is robust to excluding ... a reduction of 16 percent",
    ],
)
def test_genuine_quotes_differing_only_in_typography_are_found(quote: str) -> None:
    match = find_quote(quote, PAGE)
    assert match is not None and match.score == 1.0
    assert normalize(match.matched).startswith(normalize(quote)[:10])


@pytest.mark.parametrize(
    ("quote", "elided"),
    [
        ("The study is robust to excluding … a reduction of 16 percent", True),
        ("The study is robust to excluding ... a reduction of 16 percent", True),
        ("The study is robust to excluding [...] a reduction of 16 percent", True),
        ("which yields a reduction of 16 percent", False),
        (
            "which yields a reduction of 16 percent...",
            False,
        ),  # a trailing ellipsis leaves nothing out between
    ],
)
def test_elides_tells_a_quote_that_leaves_words_out_between_its_parts(quote: str, elided: bool) -> None:
    assert elides(quote) is elided


def test_an_elided_quote_is_shown_with_the_words_it_left_out() -> None:
    quote = "The study is robust to excluding … a reduction of 16 percent"
    match = find_quote(quote, PAGE)
    assert match is not None
    words = source_words(quote, PAGE, match.start, match.end)
    assert words == PAGE[match.start : match.end] and len(normalize(words)) > len(normalize(quote))
    assert source_words("which yields a reduction of 16 percent", PAGE, match.start, match.end) is None


def test_offsets_point_at_the_original_passage() -> None:
    match = find_quote("which yields a reduction of 16 percent", PAGE)
    assert match is not None
    assert PAGE[match.start : match.end] == "which yields a re-\nduction of 16 percent"
    match = find_quote("cost per kilometre fell sharply", PAGE)
    assert match is not None and PAGE[match.start : match.end] == "Cost per kilo\u00admetre fell\u00a0sharply"


def test_a_tiny_slip_in_a_long_quote_is_a_near_match() -> None:
    match = find_quote("Traffic on the ring road - measured by induction loop - did not rise.", PAGE)
    assert match is not None and 0.95 <= match.score < 1.0
    assert "induction loops" in match.matched


@pytest.mark.parametrize(
    "quote",
    [
        "Bike lanes cut car trips by 24 percent in 2025.",  # changed number
        "Bike lanes cut car trips by 20 percent in 2024.",  # changed year
        "Traffic on the ring road - measured by induction loops - did rise.",  # negation removed
        "and its authors do claim any effect on air quality",  # negation removed
        "the study is not robust to excluding the bridge-closure months",  # negation added
        "Traffic on the road ring - measured by induction loops - did not rise.",  # words swapped
        "Electric buses reduced emissions across the whole region last year.",  # another page
        "a reduction of 16 percent ... The study is robust to excluding",  # elision out of order
    ],
)
def test_altered_or_foreign_quotes_are_rejected(quote: str) -> None:
    assert find_quote(quote, PAGE) is None


def test_closest_passage_points_at_the_sentence_an_altered_quote_came_from() -> None:
    near = closest_passage("Bike lanes cut car trips by 24 percent in 2025.", PAGE)
    assert "Bike lanes cut car trips by 20 percent" in near


def test_large_pages_are_searched_quickly() -> None:
    filler = " ".join(f"Sentence {i} of the filler says nothing of note." for i in range(30_000))
    text = filler + " The decisive measurement was 42 units in the final year."
    assert len(text) > 1_400_000
    start = time.perf_counter()
    assert find_quote("The decisive measurement was 42 units in the final year", text) is not None
    assert find_quote("The decisive measurement was 24 units in the final year", text) is None
    assert time.perf_counter() - start < 30  # a sanity bound against pathological scans, not a benchmark


WORDS = st.sampled_from(
    ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(WORDS, min_size=12, max_size=40), st.data())
def test_any_retypographed_substring_is_found_at_its_own_span(words: list[str], data: st.DataObject) -> None:
    text = " ".join(f"\u201c{w}\u201d" if i % 5 == 0 else w for i, w in enumerate(words))
    tokens = text.split(" ")
    i = data.draw(st.integers(0, len(tokens) - 6))
    j = data.draw(st.integers(i + 5, len(tokens)))
    passage = " ".join(tokens[i:j])
    if len(normalize(passage)) < MIN_QUOTE_CHARS:
        return
    quote = passage.replace("\u201c", '"').replace("\u201d", '"').replace(" ", "\n").upper()
    match = find_quote(quote, text)
    assert match is not None and match.score == 1.0
    assert normalize(match.matched) == normalize(passage)
