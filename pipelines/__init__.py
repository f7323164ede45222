"""The amopo Kubeflow pipeline: its definition, compiled YAML and the `amopo pipeline` commands."""
