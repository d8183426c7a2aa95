"""Hardware cost estimators (FLOPs, parameters) counted from nnabla graphs."""
