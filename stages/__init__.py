"""DVC pipeline stages and the shared code they use for the spoken-word classifier."""
