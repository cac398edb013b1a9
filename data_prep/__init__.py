"""Dataset preparation: download-free synthetic data and converters for real fine-grained benchmarks."""
