"""Training strategies (what is active / how arch params move each step) and the one training loop."""
