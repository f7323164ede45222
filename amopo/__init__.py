"""AMoPO: Adaptive Multi-objective Preference Optimization without reward or reference models.

Liu et al., "AMoPO: Adaptive Multi-objective Preference Optimization without Reward Models and
Reference Models", Findings of ACL 2025 (arXiv:2506.07165).
"""

__version__ = "0.1.0"
# The project's container image (built from the Dockerfile), as pipelines and runtimes name it.
IMAGE = f"ghcr.io/amopo/amopo:{__version__}"
