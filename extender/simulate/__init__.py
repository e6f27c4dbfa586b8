"""Trace-driven placement simulator: the extender's own filter, score and re-layout code in honest worlds.

Imports only :mod:`extender.model` and :mod:`extender.plotting`. matplotlib (plot) and ortools (exact bound) are
optional (extra ``sim``).
"""
