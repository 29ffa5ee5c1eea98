"""Wires every stage together: SimPy-driven days, auctions, A/B arms and quota sweeps (paper 4.5).

Entry points: `engine.simulate` (one market), `experiment.run_ab` / `experiment.run_sweep` (arms and
their comparisons), `stages.ab_stage` / `stages.sweep_stage` (the same inside a run folder, with
report sections and plots), `stack.trained_stack` / `stack.baseline_stack` (the models a market runs).
"""
