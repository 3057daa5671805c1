"""What trains an encoder: the device and precision, the shared loop, pretraining, resuming, checkpoints (own and
released) and the settings derived from the data."""
