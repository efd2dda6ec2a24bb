"""Prediction stores: where recorded predictions wait for their labels (see base.py)."""
