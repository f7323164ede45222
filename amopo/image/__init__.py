"""Building the project's container image with whatever engine the machine has (docker, podman or
buildah), and bootstrapping a base image where no registry is reachable. Standard library only, so
that it runs before any virtual environment exists."""
