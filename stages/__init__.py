"""The DVC stages that `dvc.yaml` runs, one thin module each: read params, call `spokenwords`, write outputs."""
