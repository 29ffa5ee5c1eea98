"""Merges candidate sources under quotas, de-duplicates, and tracks funnel survival (paper 4.5.1)."""

from blending.blend import BlendConfig, blend
from blending.diversity import Diversity, advertiser_diversity
from blending.funnel import STAGES, FunnelLedger

__all__ = ["BlendConfig", "Diversity", "FunnelLedger", "STAGES", "advertiser_diversity", "blend"]
