"""The fine-tuned LLM advertiser predictor (paper 3.2-3.5, 4.2-4.3, appendix A)."""
