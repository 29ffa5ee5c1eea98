"""The name key: spellings of one advertiser or brand share it, distinct names keep theirs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic_data.names import normalise_name


@pytest.mark.parametrize(("spellings", "key"), [
    (["B & C Eagle", "B&C Eagle", "b and c eagle", "B&C  EAGLE"], "bandceagle"),
    (["Oral-B", "Oral B", "ORAL-B®", "OralB"], "oralb"),
    (["Shop-Vac", "Shop Vac"], "shopvac"),
    (["  Cédar & SONS, Inc. ", "Cedar and Sons Inc"], "cedarandsonsinc"),
    (["ＡＣＭＥ™", "Acme"], "acme"),  # full-width letters, trademark sign
])
def test_normalise_name_merges_spellings_of_one_name(spellings, key):
    assert {normalise_name(name) for name in spellings} == {key}


@pytest.mark.parametrize(("first", "second"), [
    ("Zephyr Lab", "Zephyr Labs"), ("3M", "4M"), ("ブランド", "フランド"),  # kana voicing marks stay
])
def test_normalise_name_keeps_distinct_names_apart(first, second):
    assert normalise_name(first) != normalise_name(second)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_normalise_name_is_idempotent_and_keeps_only_letters_marks_digits(name):
    key = normalise_name(name)
    assert normalise_name(key) == key
    assert not any(char.isspace() or char in "&-_.,'" for char in key)
