"""Dataset cards (rendering, reading, section updates); publishing and verification build on these."""
