"""The learning loop: datasets from the conversation log, trainers, the evaluation gate and versions."""
