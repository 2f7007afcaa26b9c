"""Settings: defaults < config file < INKSTAND_* variables < command-line flags."""

import pytest

from inkstand.config import ConfigError, find_embedded_model, load_settings


def test_defaults_serve_both_palmyra_ids_on_the_embedded_model():
    settings = load_settings({}, environ={})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert [m.id for m in settings.models] == ["palmyra-x5", "palmyra-x4"]
    assert {m.path for m in settings.models} == {find_embedded_model()}
    assert find_embedded_model().endswith(".gguf")


def test_flag_beats_env_beats_file(tmp_path):
    config = tmp_path / "inkstand.toml"
    config.write_text('port = 7000\nhost = "0.0.0.0"\nthreads = 3\n')
    env = {"INKSTAND_PORT": "7100", "INKSTAND_THREADS": "4", "INKSTAND_CONFIG": str(config)}
    settings = load_settings({"port": 7200}, environ=env)
    assert (settings.port, settings.threads, settings.host) == (7200, 4, "0.0.0.0")


def test_env_api_keys_split_on_commas():
    settings = load_settings({}, environ={"INKSTAND_API_KEY": "a,b"})
    assert settings.api_key == ("a", "b")


def test_config_file_maps_models_and_aliases(tmp_path):
    gguf = find_embedded_model()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[models.palmyra-x5]\npath = "{gguf}"\nctx_size = 1024\nname = "Small"\n'
        'max_output_tokens = 100\n[aliases]\npalmyra-med = "palmyra-x5"\n'
    )
    settings = load_settings({"config": str(config)}, environ={})
    (model,) = settings.models
    assert (model.id, model.ctx_size, model.name, model.max_output_tokens) == (
        "palmyra-x5",
        1024,
        "Small",
        100,
    )
    assert dict(settings.aliases) == {
        "palmyra-med": "palmyra-x5",
        "palmyra-translate": "palmyra-x5",
    }


@pytest.mark.parametrize(
    "text",
    ['port = "x"', "nonsense = 1", "[models.a]\npath = '/no/such.gguf'", "not toml ["],
)
def test_bad_config_is_refused_with_a_reason(tmp_path, text):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"config": str(config)}, environ={})
    assert caught.value.description


def test_missing_config_file_is_refused():
    with pytest.raises(ConfigError):
        load_settings({"config": "/no/such/file.toml"}, environ={})


def test_gateway_settings_from_env_and_flags():
    env = {"INKSTAND_GATEWAY": "off", "INKSTAND_RPM": "400", "INKSTAND_TPM": "25000"}
    settings = load_settings({}, environ=env)
    assert (settings.gateway, settings.rpm, settings.tpm) == (False, 400, 25000)
    assert load_settings({"gateway": True}, environ=env).gateway is True
    defaults = load_settings({}, environ={})
    assert (defaults.gateway, defaults.rpm, defaults.tpm) == (True, 0, 0)
    with pytest.raises(ConfigError):
        load_settings({}, environ={"INKSTAND_GATEWAY": "maybe"})


def test_usage_retention_from_flag_env_and_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("usage_retention_days = 30\n")
    assert load_settings({}, environ={}).usage_retention_days == 90
    assert load_settings({"config": str(config)}, environ={}).usage_retention_days == 30
    env = {"INKSTAND_USAGE_RETENTION_DAYS": "0"}
    assert load_settings({"config": str(config)}, environ=env).usage_retention_days == 0
    assert load_settings({"usage_retention_days": 7}, environ=env).usage_retention_days == 7
    with pytest.raises(ConfigError):
        load_settings({"usage_retention_days": -1}, environ={})


UPSTREAM_ENTRY = """
[models.palmyra-x5]
backend = "openai"                 # "llama_cpp" (the default) or "openai"
urls = ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"]   # one or more replicas
upstream_model = "Qwen/Qwen2.5-72B-Instruct"  # the model name the engine expects
api_key_env = "UPSTREAM_API_KEY"   # optional: a variable holding the engine's key
ctx_size = 32768
max_output_tokens = 8192
"""


def test_a_model_entry_may_name_an_upstream_beside_a_local_model(tmp_path):
    config = tmp_path / "c.toml"
    local = f'[models.local]\npath = "{find_embedded_model()}"\n'
    config.write_text(UPSTREAM_ENTRY + "tools = 'json_schema'\nmax_in_flight = 8\n" + local)
    settings = load_settings({"config": str(config)}, environ={})
    fleet, local_model = settings.models
    assert fleet.upstream is not None and local_model.upstream is None
    assert fleet.upstream.urls == ("http://gpu-1:8000/v1", "http://gpu-2:8000/v1")
    assert fleet.upstream.model == "Qwen/Qwen2.5-72B-Instruct"
    assert fleet.upstream.api_key_env == "UPSTREAM_API_KEY"
    assert (fleet.upstream.tools, fleet.upstream.max_in_flight) == ("json_schema", 8)
    assert (fleet.ctx_size, fleet.max_output_tokens, fleet.path) == (32768, 8192, "")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("colour = 'blue'\n", "colour"),
        ("path = '/x.gguf'\n", "path"),  # a local key on an upstream entry
        ("urls = []\n", "urls"),
        ("tools = 'sometimes'\n", "tools"),
        ("backend = 'tgi'\n", "backend"),
        ("max_in_flight = 0\n", "max_in_flight"),
    ],
)
def test_a_bad_model_entry_is_a_start_up_error_naming_the_key(tmp_path, extra, named):
    config = tmp_path / "c.toml"
    entry = UPSTREAM_ENTRY
    if extra.startswith(("urls", "backend")):
        key = extra.split(" ")[0]
        entry = "\n".join(line for line in entry.splitlines() if not line.startswith(key)) + "\n"
    config.write_text(entry + extra)
    with pytest.raises(ConfigError) as caught:
        load_settings({"config": str(config)}, environ={})
    assert named in caught.value.description


def test_an_unknown_key_in_a_local_model_entry_is_refused_too(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[models.a]\npath = "{find_embedded_model()}"\nurls = ["http://x/v1"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings({"config": str(config)}, environ={})
    assert "urls" in caught.value.description and "upstream" in caught.value.description


def test_a_draft_model_is_set_per_entry_or_for_all(tmp_path):
    gguf = find_embedded_model()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[models.a]\npath = "{gguf}"\ndraft = "{gguf}"\nspeculate = "draft"\n'
        f'[models.b]\npath = "{gguf}"\n'
    )
    a, b = load_settings({"config": str(config)}, environ={}).models
    assert (a.draft, a.speculate, b.draft, b.speculate) == (gguf, "draft", "", "auto")
    everyone = load_settings({"draft": gguf}, environ={}).models
    assert {m.draft for m in everyone} == {gguf}


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"speculate": "draft"}, "needs a draft model"),
        ({"draft": "/no/such.gguf"}, "/no/such.gguf does not exist"),
        ({"speculate": "eagle"}, "must be one of auto, off, ngram, draft"),
    ],
)
def test_a_draft_mode_without_a_draft_model_is_refused(flags, named):
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, environ={})
    assert named in caught.value.description
