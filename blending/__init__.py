"""Merges candidate sources under quotas, de-duplicates, and tracks funnel survival (paper 4.5.1)."""
