"""Benchmarks: they import the library (arc_data, augment, pretrain, submission); nothing there imports them."""
