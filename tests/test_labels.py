"""Protocol section 3: a score delta and tau, or two position-swapped answers, become one label."""

import math

import pytest

from pigbench.protocol import Label, combine_swapped, label_from_delta

A, B, T, I = Label.A, Label.B, Label.TIE, Label.INVALID


@pytest.mark.parametrize(
    "delta,tau,expected",
    [
        (0.0, 0.0, T), (1e-12, 0.0, A), (-1e-12, 0.0, B),  # default tau: only an exact tie is a TIE
        (0.25, 0.25, T), (-0.25, 0.25, T), (0.2500001, 0.25, A), (-0.2500001, 0.25, B),  # |delta| <= tau
        (math.nan, 0.0, I), (math.inf - math.inf, 0.5, I),  # NaN, whatever tau, is INVALID
        (math.inf, 0.5, A), (-math.inf, 0.5, B),
    ],
)
def test_label_from_delta(delta, tau, expected):
    assert label_from_delta(delta, tau) is expected


@pytest.mark.parametrize(
    "first,second,expected",
    [
        (A, A, A), (B, B, B), (T, T, T),  # agreeing answers
        (A, B, T), (B, A, T), (A, T, T), (T, B, T),  # disagreeing answers give a tie
        (I, A, A), (B, I, B), (I, T, T), (T, I, T),  # one INVALID uses the other
        (I, I, I),
    ],
)
def test_combine_swapped(first, second, expected):
    assert combine_swapped(first, second) is expected
