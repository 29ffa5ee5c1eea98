import math

import numpy as np
import pytest

from blending.diversity import advertiser_diversity


def test_exact_values():
    even = advertiser_diversity(np.array([5, 5, 5, 5]))
    assert even.unique_advertisers == 4 and even.gini == pytest.approx(0.0)
    assert even.entropy == pytest.approx(math.log(4))
    one = advertiser_diversity(np.array([0, 0, 0, 10]))
    assert one.unique_advertisers == 1 and one.entropy == pytest.approx(0.0)
    assert one.gini == pytest.approx(0.75)  # (2*4*10)/(4*10) - 5/4
    assert advertiser_diversity(np.array([1, 3])).gini == pytest.approx(0.25)


def test_concentration_lowers_entropy_and_raises_gini():
    spread = advertiser_diversity(np.array([10, 9, 8, 7, 6]))
    concentrated = advertiser_diversity(np.array([30, 5, 3, 1, 1]))
    assert concentrated.entropy < spread.entropy and concentrated.gini > spread.gini


def test_empty_and_bad_input():
    assert advertiser_diversity(np.zeros(3)).unique_advertisers == 0
    with pytest.raises(ValueError):
        advertiser_diversity(np.array([-1, 2]))
