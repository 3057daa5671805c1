"""A trained model for others: the bundle and its card, reading new skeletons, inference and ONNX export."""
