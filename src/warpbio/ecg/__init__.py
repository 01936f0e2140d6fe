"""ECG workflow: R-peak detection, beat embedding and VAE beat anomaly scores."""
