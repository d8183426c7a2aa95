"""Candidate and fixed blocks, registered in BLOCKS and built by one builder, ``build_block``."""
