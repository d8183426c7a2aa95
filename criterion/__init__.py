"""Training criteria ``(logits, target, **context) -> loss Variable``, registered in CRITERIA."""
