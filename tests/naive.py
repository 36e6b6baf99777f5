"""Slow, obvious reference implementations that the fast kernels are tested against.

One section per subject. Each reference favours clarity over speed: plain
Python, ``decimal``, sorting, dicts. Append new sections; keep them obvious.
"""
