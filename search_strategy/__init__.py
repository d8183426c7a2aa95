"""Framework-free search strategies (random, evolution, ...); the SEARCH_STRATEGIES registry imports the modules.

This file stays a docstring only and nothing in this package imports nnabla.
"""
