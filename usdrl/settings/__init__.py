"""What a run is told: the sections of params.yaml, their allowed values and profiles (``params``)."""
