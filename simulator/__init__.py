"""Wires every stage together: SimPy-driven days, auctions, A/B arms, sweeps and the demo (paper 4.5)."""
