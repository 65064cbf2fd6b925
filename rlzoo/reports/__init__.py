"""Ablation reports: load runs, compare groups with rliable's statistics, write plots and tables."""
