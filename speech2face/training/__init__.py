"""Training: the shared loop, strategies, and one task per stage."""
