"""MLflow Model Registry for trained models: register with metrics as tags, promote through a gate.

    register  log the Hugging Face folder (+ MLflow's transformers flavour) and create a version
              with alias ``challenger`` (:mod:`amopo.registry.register`)
    promote   move alias ``champion`` when the gate passes (:mod:`amopo.registry.gate`,
              :mod:`amopo.registry.promote`)
    resolve   ``models:/NAME@ALIAS`` to the artifact URI of the HF folder (:mod:`amopo.registry.resolve`)

Works on the embedded sqlite store and on an ``mlflow server`` over HTTP. With ``registry: kubeflow``
the same steps use the Kubeflow Model Registry instead (:mod:`amopo.registry.kubeflow`).
"""

from __future__ import annotations

from amopo.errors import AmopoError


class RegistryError(AmopoError):
    """The registry cannot be reached, or a model, version or alias is missing or malformed."""
