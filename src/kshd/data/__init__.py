"""Drawings in: intake, images, captions (sources and cache), the dataset, bundled samples."""
