"""Agents wire the components into one run: ``search`` (supernet -> search -> retrain) and ``evaluate``."""
