"""Test-wide settings: no network look-ups, no telemetry, no provider credentials."""

import os
import re
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
# litellm loads a `.env` file into os.environ when it is imported in its default DEV mode (found
# by walking up from its package, so the repository's own `.env`): a developer's keys would come
# back after the fixture below removed them.
os.environ["LITELLM_MODE"] = "PRODUCTION"

# PostgreSQL fixtures (pg_database, pg_url) for every test module.
pytest_plugins = ["pg"]

# Provider credentials, endpoints and litellm settings a developer's shell may hold; with any of
# them set, a test that names an API model (gpt-4o, the judges) would make real, paid calls.
PROVIDER_ENV_PATTERN = re.compile(
    r"^(OPENAI|ANTHROPIC|AZURE|AZURE_OPENAI|GEMINI|VERTEXAI|VERTEX|MISTRAL|GROQ|COHERE|CO|"
    r"TOGETHER|TOGETHERAI|HUGGINGFACE|DEEPSEEK|XAI|PERPLEXITYAI|OPENROUTER|FIREWORKS|"
    r"FIREWORKS_AI|REPLICATE|VOYAGE|OLLAMA|DATABRICKS|WATSONX|CEREBRAS|DEEPINFRA|NVIDIA_NIM|"
    r"LITELLM)_\w+$"
    r"|^\w+_(API_KEY|API_TOKEN|API_BASE|BASE_URL|API_VERSION)$")
PROVIDER_ENV_NAMES = frozenset({
    "GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION_NAME", "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
})
# Settings the tests themselves rely on: kept even though the patterns above match them.
KEPT_ENV_NAMES = frozenset({"LITELLM_LOCAL_MODEL_COST_MAP", "LITELLM_MODE"})


def configured_env_names() -> set[str]:
    """Every variable configs/models.yaml (required_env, *_env) and configs/serving.yaml
    (token_env) read a credential, endpoint or model name from."""
    from scoring.model_registry import load_model_registry
    from serving.settings import serving_token_env

    names = {serving_token_env()}
    for model in load_model_registry():
        names.update(model.required_env)
        names.update(n for n in (model.api_key_env, model.api_base_env, model.model_name_env) if n)
    return names


def provider_env_names(environ: dict[str, str] | os._Environ) -> set[str]:
    """The names in `environ` that the tests must not inherit from the caller."""
    listed = PROVIDER_ENV_NAMES | configured_env_names()
    return {name for name in environ
            if (name in listed or PROVIDER_ENV_PATTERN.match(name)) and name not in KEPT_ENV_NAMES}


@pytest.fixture(scope="session", autouse=True)
def no_provider_credentials(tmp_path_factory) -> Iterator[None]:
    """Remove the caller's provider keys and base URLs for the whole session; subprocesses the
    tests start copy os.environ, so they do not see them either. Session scope: module- and
    session-scoped fixtures (the models graph, judge runs) are set up before any function-scoped
    fixture would run. Tests that need a key set a fake one with monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        for name in provider_env_names(os.environ):
            patch.delenv(name)
        # boto3 would otherwise read ~/.aws and the instance metadata service for credentials
        missing = str(tmp_path_factory.mktemp("no_aws") / "absent")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
        patch.setenv("AWS_CONFIG_FILE", missing)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def cfg():
    """configs/datasets.yaml, parsed."""
    from synthetic.splits import load_dataset_config

    return load_dataset_config()


@pytest.fixture(scope="session")
def master(cfg):
    """The site master data built from the configured seed."""
    from synthetic.master_data import build_site_master

    return build_site_master(cfg.site_master, cfg.seed)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny embedded base model (test_embedded_model.TINY), built once per test module with
    one torch thread."""
    import torch
    from test_embedded_model import TINY

    from training.embedded_model import build_embedded_base_model

    path = tmp_path_factory.mktemp("tiny") / "base"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    build_embedded_base_model(path, TINY)
    yield path
    torch.set_num_threads(previous)
