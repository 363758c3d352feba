"""Training: tile datasets and folder layouts, the CycleGAN and Pyramid pix2pix trainers.

Importing this package is cheap (numpy only); torch is imported by the trainer modules.
"""
