"""avparse.train: offline work (feature datasets, the scene generator, feature
extraction from media files, training and evaluation). Imports avparse.core."""
