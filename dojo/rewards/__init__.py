"""Reward models: success classifiers, VLM classifiers, preference rewards, intervention labels."""
