"""The tests never see the caller's provider keys (tests/conftest.py, `no_provider_credentials`):
a pytest run started with fake keys in its environment finds none of them, in a module-scoped
fixture, in a test, and in a subprocess a test starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import configured_env_names

TESTS = Path(__file__).resolve().parent

PROBE = '''
import json, os, subprocess, sys
import pytest

NAMES = json.loads(os.environ["PROBE_NAMES"])


def seen(environ):
    return sorted(name for name in NAMES if name in environ)


@pytest.fixture(scope="module")
def in_module_fixture():
    return seen(os.environ)


def test_probe(in_module_fixture):
    code = "import os, json; print(json.dumps(dict(os.environ)))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    report = {"module_fixture": in_module_fixture, "test": seen(os.environ),
              "subprocess": seen(json.loads(child.stdout)),
              "kept": os.environ.get("GXPLAB_PROBE_KEPT"),
              "litellm_mode": os.environ.get("LITELLM_MODE"),
              "aws_credentials_file": os.environ.get("AWS_SHARED_CREDENTIALS_FILE")}
    with open(os.environ["PROBE_OUT"], "w") as handle:
        json.dump(report, handle)
'''


def test_caller_keys_are_absent_inside_tests(tmp_path):
    fake = {name: f"sk-fake-{name.lower()}" for name in (
        *configured_env_names(), "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE",
        "ANTHROPIC_API_KEY", "AZURE_API_KEY", "AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT",
        "GEMINI_API_KEY", "GOOGLE_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY", "COHERE_API_KEY",
        "TOGETHERAI_API_KEY", "HUGGINGFACE_API_KEY", "HF_TOKEN", "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "LITELLM_PROXY_API_KEY",
        "LITELLM_API_BASE", "DEEPSEEK_API_KEY", "OLLAMA_API_BASE")}
    assert {"GXPLAB_OPENAI_COMPAT_API_KEY", "GXPLAB_SERVE_TOKEN", "AWS_REGION_NAME"} <= set(fake)
    (tmp_path / "test_probe.py").write_text(PROBE)
    out = tmp_path / "report.json"
    env = {**os.environ, **fake, "GXPLAB_PROBE_KEPT": "1", "LITELLM_MODE": "DEV",
           "PROBE_NAMES": json.dumps(sorted(fake)), "PROBE_OUT": str(out),
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p",
                          "no:cacheprovider", str(tmp_path / "test_probe.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["module_fixture"] == report["test"] == report["subprocess"] == []
    assert report["kept"] == "1"  # other variables pass through
    assert report["litellm_mode"] == "PRODUCTION"  # litellm does not load a .env file
    assert not Path(report["aws_credentials_file"]).exists()  # nor ~/.aws
