"""Helpers for the meta-learning course: data, episodes, reference algorithms, plots and checks.

Each module holds one idea; import what a chapter needs, e.g.
``from course_utils import episodes, glyphs``.
"""
__version__ = "0.1.0"
