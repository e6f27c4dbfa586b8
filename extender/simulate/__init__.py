"""Trace-driven placement simulator: the extender's own filter, score and re-layout code in honest worlds.

Imports only :mod:`extender.model`. matplotlib (plot) and ortools (exact bound) are optional (extra ``sim``).
"""
