"""Using trained models: load run directories, text conditioning, generation."""
