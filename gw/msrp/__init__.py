"""msrp layer."""
