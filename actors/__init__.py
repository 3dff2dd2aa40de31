"""Ray actors shared by the batch pipelines and the service."""
