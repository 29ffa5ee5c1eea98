"""Adapters from public real-world logs into adsim's own world tables (issue 4: real data).

`amazon.py` turns Amazon 2018 purchase sequences (LC-Rec/LETTER format) into a `schema.World` whose
advertisers are brands, so the predictors and baselines run unchanged on logs nobody here generated.
"""
