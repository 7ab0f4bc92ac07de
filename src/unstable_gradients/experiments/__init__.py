"""Experiment drivers for the chapters: each returns plain data that ``plotting`` draws.

Kept out of the notebooks so that cells stay short and the same code is tested and reused.
"""
