"""Policies and feature extractors: the NetHack/MiniHack network and the Procgen IMPALA-CNN."""
from rlzoo.models.factory import MODEL_FAMILIES, build_model, build_torso, validate_model_cfg
from rlzoo.models.policy import Policy

__all__ = ["MODEL_FAMILIES", "Policy", "build_model", "build_torso", "validate_model_cfg"]
