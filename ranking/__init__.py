"""DCN-v2 ctcvr/vtcvr rankers with LLM-derived features (paper 3.6.2, 4.4.1)."""
