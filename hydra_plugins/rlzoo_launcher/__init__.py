"""Hydra launchers of rlzoo (Hydra finds plugins only below the `hydra_plugins` namespace package)."""
