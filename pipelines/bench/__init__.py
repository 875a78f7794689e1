"""Measuring: benchmark workloads and reports, FLOP counts from the models' shapes, and real-size models
with random weights."""
