"""Motif (Klissarov et al. 2023) and ONI (Zheng et al. 2024): LLM preferences over NetHack messages
turned into intrinsic rewards. Offline pipeline: collect → annotate → train the reward model."""
