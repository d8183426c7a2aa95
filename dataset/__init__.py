"""Datasets: in-memory splits (digits, CIFAR-10/100, image folders, synthetic), registered in DATASETS."""
