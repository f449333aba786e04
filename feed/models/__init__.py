"""Recommenders sharing one small contract: fit, recommend, similar_items, save, load."""
