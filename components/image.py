"""The image the components are declared with (built from the project's Dockerfile).

It is only the components' declared base image: the pipeline sets every task's image from its
``image`` parameter (``task.set_container_image``), so `amopo pipeline compile --image IMAGE` or a
run's ``image`` value chooses the image of every step, TrainJob and custom InferenceService.
"""

from amopo import IMAGE

__all__ = ["IMAGE"]
