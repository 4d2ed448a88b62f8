"""The probes behind each chapter's exercise checks, one module per chapter (``ch00``, ``ch01``...).

In a notebook: ``from course_utils.chapter_checks import ch00 as check`` and, after an
exercise, ``sample_episode = check.sample_episode(sample_episode)``.
See :mod:`course_utils.checks` for the protocol.
"""
