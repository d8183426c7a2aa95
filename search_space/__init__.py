"""Search spaces: base classes, choice vocabulary, block builder and one sub-package per space.

This file stays import-light (``search_space.choices`` must import without nnabla); the
SEARCH_SPACES registry imports the sub-packages on first look-up.
"""
