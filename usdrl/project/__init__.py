"""What notebooks and dvc.yaml use: the project's folders and settings (``pipeline``) and the tables (``report``)."""
