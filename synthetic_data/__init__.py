"""The synthetic ads marketplace (DESIGN: synthetic_data/): world generator, data contracts, labels."""
