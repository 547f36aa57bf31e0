"""Feature extractors (VGGish, ResNet-152, R(2+1)D-18 and the lite profile)."""
