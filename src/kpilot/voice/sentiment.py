"""Lexicon sentiment of feedback text with VADER (offline: the ``vaderSentiment`` package ships its lexicon).

VADER gives a ``compound`` score in [-1, 1]. Labels follow its authors' thresholds: compound >= 0.05 is
positive, <= -0.05 negative, anything between neutral. It is a rule-and-lexicon model tuned on social media
text: good at short, emotive sentences, much weaker on reviews and longer prose, blind to sarcasm and domain
words, and polite requests ("please add dark mode") tend to score positive. docs/customer_voice.md says more.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

__all__ = ["NEGATIVE_BELOW", "POSITIVE_FROM", "Label", "label_for", "score"]

POSITIVE_FROM = 0.05
NEGATIVE_BELOW = -0.05
Label = Literal["positive", "neutral", "negative"]


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def label_for(compound: float) -> Label:
    if compound >= POSITIVE_FROM:
        return "positive"
    if compound <= NEGATIVE_BELOW:
        return "negative"
    return "neutral"


def score(text: str) -> tuple[float, Label]:
    """``(compound, label)`` of ``text``; empty text is neutral 0."""
    if not text.strip():
        return 0.0, "neutral"
    compound = float(_analyzer().polarity_scores(text)["compound"])
    return compound, label_for(compound)
