"""The networks: the DSTE and STTR encoders, the MG-FD losses, the view augmentations and the collectives of
distributed training."""
