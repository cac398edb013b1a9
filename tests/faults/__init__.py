"""Fault injection and bad input (issue 7): interrupted runs, full disks, damaged checkpoints, unsafe archives,
odd images, broken dataset layouts, notebooks run twice or out of order, interrupted downloads."""
