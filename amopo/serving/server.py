"""`amopo serve`: serve a model with KServe's ModelServer until stopped (Ctrl-C / SIGTERM).

    amopo serve --model runs/quickstart/train/model            # a Hugging Face folder
    amopo serve --model models:/amopo@champion                 # from the MLflow registry
    amopo serve --model embedded:smollm2-135m-instruct --port 8080 --model-name smollm2

Routes: KServe's ``/`` (liveness), ``/v2/health/ready``, ``/v1/models/NAME`` (readiness),
``/metrics`` (Prometheus), v1 ``:predict`` and v2 ``/infer`` (text in, text out), and the OpenAI
routes under ``/openai/v1``. Binds 127.0.0.1 unless ``--host`` says otherwise (in a cluster:
``--host 0.0.0.0``). A bearer token is required on every route that runs or describes the model (v1,
v2, OpenAI; only the probes and /metrics stay open, :mod:`amopo.serving.auth`) when the environment
variable named by ``--api-key-env`` (default AMOPO_SERVE_API_KEY) is set and non-empty. A model folder with
``amopo_conditioning.json`` (written by `amopo train` for AMoPO, and carried by the registered
version) takes ``dimension_targets`` on every route (``amopo.serving.steering``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from amopo.config import field
from amopo.errors import ConfigError
from amopo.models import EMBEDDED_SMOLLM2
from amopo.serving.errors import ServingError


@dataclass
class ServeConfig:
    model: str = field(EMBEDDED_SMOLLM2, help="model to serve: a Hugging Face folder, models:/NAME@ALIAS "
                                              "(or models:/NAME/VERSION) from the MLflow registry, or the embedded model")
    model_name: str = field("amopo", help="name the model is served under (URL paths and the OpenAI 'model' field)")
    host: str = field("127.0.0.1", help="address to listen on (0.0.0.0 for all interfaces, e.g. in a pod)")
    port: int = field(8080, help="HTTP port")
    mlflow_tracking_uri: str | None = field(None, help="MLflow tracking URI for models:/ references "
                                                "(default: $MLFLOW_TRACKING_URI, else runs/mlflow)")
    device: str = field("auto", help="torch device: auto (cuda when available), cpu, cuda, cuda:1, ...")
    max_batch_size: int = field(16, help="most requests generated together in one batch")
    max_batch_wait_ms: float = field(5.0, help="how long the first request of a batch waits for company")
    max_prompt_tokens: int = field(1024, help="longest prompt accepted, in tokens (longer: 400)")
    max_tokens_limit: int = field(512, help="largest max_tokens a request may ask for (larger: 400)")
    default_max_tokens: int = field(128, help="max_tokens when a request does not say")
    max_body_bytes: int = field(1_048_576, help="largest request body accepted, in bytes (larger: 413)")
    api_key_env: str = field("AMOPO_SERVE_API_KEY", help="environment variable holding the bearer token the "
                                                         "OpenAI routes require (unset or empty: no check)")
    torch_threads: int = field(0, help="CPU threads for torch (0: torch's default)")

    def validate(self) -> None:
        if not self.model_name or "/" in self.model_name or ":" in self.model_name:
            raise ConfigError(f"model_name {self.model_name!r}: must be non-empty without '/' or ':'")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port}: must be between 1 and 65535")
        for name in ("max_batch_size", "max_prompt_tokens", "max_tokens_limit", "default_max_tokens",
                     "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.max_batch_wait_ms < 0:
            raise ConfigError("max_batch_wait_ms must be ≥ 0")


def resolve_model_dir(model: str, tracking_uri: str | None = None) -> str:
    """A local Hugging Face folder for ``model`` (downloading a registry version once into the cache)."""
    from amopo.registry import RegistryError
    from amopo.registry.resolve import download_hf_folder, is_models_uri

    if is_models_uri(model):
        try:
            return str(download_hf_folder(model, tracking_uri))
        except RegistryError as exc:
            raise ServingError(str(exc)) from None
    from amopo.errors import ModelError
    from amopo.models import resolve_model

    try:
        return resolve_model(model)
    except ModelError as exc:
        raise ServingError(str(exc)) from None


def _check_port_free(host: str, port: int) -> None:
    # uvicorn would only log the failure and exit; say it clearly before loading anything.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServingError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def build_app(cfg: ServeConfig, model_dir: str):
    """Load the engine and add the OpenAI routes and the body limit to KServe's app.

    Returns (the kserve model, the FastAPI app).
    """
    from amopo.serving.engine import TextEngine
    from amopo.serving.kserve_compat import kserve
    from amopo.serving.kserve_model import TextGenerationModel
    from amopo.serving.auth import BearerToken
    from amopo.serving.limits import BodySizeLimit, Limits
    from amopo.serving.openai_routes import register_openai_routes

    engine = TextEngine.load(model_dir, limits=Limits(cfg.max_prompt_tokens, cfg.max_tokens_limit,
                                                      cfg.default_max_tokens),
                             max_batch_size=cfg.max_batch_size, max_batch_wait_s=cfg.max_batch_wait_ms / 1000,
                             device=cfg.device)
    app = kserve.model_server.app
    register_openai_routes(app, engine, cfg.model_name)
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_body_bytes)
    token = os.environ.get(cfg.api_key_env)
    if token:
        app.add_middleware(BearerToken, token=token)   # outermost: nothing is read before the token is checked
    return TextGenerationModel(cfg.model_name, engine), app


def serve(cfg: ServeConfig) -> dict:
    """Serve ``cfg.model`` until stopped; returns where it was served."""
    from amopo.serving.kserve_compat import BoundModelServer

    if cfg.torch_threads:
        import torch
        torch.set_num_threads(cfg.torch_threads)
    _check_port_free(cfg.host, cfg.port)
    model_dir = resolve_model_dir(cfg.model, cfg.mlflow_tracking_uri)
    model, _ = build_app(cfg, model_dir)
    url = f"http://{'[' + cfg.host + ']' if ':' in cfg.host else cfg.host}:{cfg.port}"
    auth = "bearer token required" if os.environ.get(cfg.api_key_env) else "no auth"
    spec = model.engine.spec
    steers = ("dimension_targets for " + ", ".join(d["name"] for d in spec["dimensions"]) if spec
              else "no dimension conditioning")
    print(f"serving {model_dir} as '{cfg.model_name}' on {url} (OpenAI base URL {url}/openai/v1, {auth}, "
          f"{steers})", flush=True)
    server = BoundModelServer(host=cfg.host, http_port=cfg.port, enable_grpc=False, workers=1,
                              enable_docs_url=False)
    server.start([model])
    return {"model_dir": model_dir, "url": url}
