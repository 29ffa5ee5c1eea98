"""One key for the spellings of one advertiser or brand name, shared by every stage that matches names:
the LLM's repeated-name check, GRPO reward and name -> ID conversion, the real-data brands and the
ranking's interest-to-category match (issue #13, fault 6).
"""

from __future__ import annotations

import re
import unicodedata

_TRADEMARK_SIGNS = str.maketrans("", "", "\u2122\u00ae\u00a9\u2120")  # ™ ® © ℠ (NFKD spells ™ "TM")
_LATIN_ACCENT = re.compile("[\u0300-\u036f]").fullmatch  # combining diacritics; kana voicing marks stay


def normalise_name(name: str) -> str:
    """The key under which two spellings denote one advertiser or brand ("" when none is left).

    Casefolded, compatibility forms unified (full-width letters, ligatures), Latin accents and
    trademark signs dropped, '&' read as 'and', then only letters, marks and digits (of any script)
    kept: "B & C Eagle", "B&C eagle" and "B and C Eagle" share "bandceagle", "Oral-B" and "Oral B"
    share "oralb". One key for repeated names, the GRPO reward's match, the name -> ID conversion
    and the real-data brands, so that all of them agree on which names are one.
    """
    # Unicode's compatibility caseless match (Unicode 3.13, D146): NFKD(cf(NFKD(cf(NFD(name))))).
    decomposed = unicodedata.normalize("NFD", name.translate(_TRADEMARK_SIGNS))
    for _ in range(2):
        decomposed = unicodedata.normalize("NFKD", decomposed.casefold())
    return "".join(char for char in decomposed.replace("&", "and")
                   if unicodedata.category(char)[0] in "LMN" and not _LATIN_ACCENT(char))
