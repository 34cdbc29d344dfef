"""[effopt] configuration: defaults, validation messages, environment overrides."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from effopt.config import OPTIONS, ConfigError, Settings, markdown_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_expand_airflow_home():
    s = Settings.from_mapping({}, "/srv/airflow")
    assert s.store_url == "sqlite:////srv/airflow/effopt.db"
    assert s.cache_dir == "/srv/airflow/effopt-cache"
    assert s.task_usage_listener is True
    assert s.cache_backend == "auto"
    assert s.smtp_conn_id == "smtp_default"


def test_values_are_converted():
    s = Settings.from_mapping(
        {"task_usage_listener": "False", "cache_backend": "REDIS", "store_url": "postgresql://u:p@db/effopt"}, "/h"
    )
    assert s.task_usage_listener is False
    assert s.cache_backend == "redis"
    assert s.store_url == "postgresql://u:p@db/effopt"


def test_every_bad_key_is_named_with_its_accepted_values():
    with pytest.raises(ConfigError) as err:
        Settings.from_mapping({"cache_backend": "memcached", "task_usage_listener": "sometimes", "cache_backed": "x"},
                              "/h")
    text = str(err.value)
    assert "[effopt] cache_backend = 'memcached' is invalid; accepted values: auto, local, redis" in text
    assert "[effopt] task_usage_listener = 'sometimes' is invalid; accepted values: true or false" in text
    assert "[effopt] cache_backed is not an effopt option" in text
    assert "AIRFLOW__EFFOPT__CACHE_BACKEND" in text


def test_secret_fallbacks_are_a_list_and_a_short_one_is_named_without_its_value():
    s = Settings.from_mapping({"cache_secret_fallbacks": " first-old-secret-16 , , second-old-secret-1"}, "/h")
    assert s.cache_secret_fallbacks == ("first-old-secret-16", "second-old-secret-1")
    assert dict(s.describe())["cache_secret_fallbacks"] == "***"
    assert Settings.from_mapping({}, "/h").cache_secret_fallbacks == ()
    with pytest.raises(ConfigError) as err:
        Settings.from_mapping({"cache_secret_fallbacks": "a-long-enough-secret,hunter2"}, "/h")
    text = str(err.value)
    assert "cache_secret_fallbacks is invalid: item 2 has 7 character(s), each needs at least 16" in text
    assert "hunter2" not in text and "a-long-enough-secret" not in text


def test_markdown_table_lists_every_option():
    table = markdown_table()
    for option in OPTIONS:
        assert f"| `{option.key}` |" in table


def _cli(*args, env):
    full = {**os.environ, "PYTHONPATH": os.path.join(REPO, "plugins"), **env}
    return subprocess.run([sys.executable, "-m", "effopt", *args], env=full, capture_output=True, text=True)


def test_check_reads_airflow_environment_overrides(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__EFFOPT__CACHE_BACKEND": "nope"}
    res = _cli("config", "check", env=env)
    assert res.returncode == 1
    assert "cache_backend = 'nope' is invalid" in res.stderr

    ok = _cli("config", "show", env={"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__EFFOPT__CACHE_BACKEND": "local"})
    assert ok.returncode == 0, ok.stderr
    assert "cache_backend = local" in ok.stdout
    assert f"store_url = sqlite:///{tmp_path}/effopt.db" in ok.stdout


def test_check_reads_airflow_cfg(tmp_path):
    (tmp_path / "airflow.cfg").write_text("[effopt]\ntask_usage_listener = perhaps\n")
    res = _cli("config", "check", env={"AIRFLOW_HOME": str(tmp_path)})
    assert res.returncode == 1
    assert "task_usage_listener = 'perhaps' is invalid" in res.stderr


def test_secret_option_is_masked_and_cmd_forms_are_rejected(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__EFFOPT__CACHE_SECRET": "x" * 32}
    res = _cli("config", "show", env=env)
    assert res.returncode == 0, res.stderr
    assert "cache_secret = ***" in res.stdout and "x" * 32 not in res.stdout

    cmd = _cli("config", "check", env={**env, "AIRFLOW__EFFOPT__STORE_URL_CMD": "echo sqlite:///x.db"})
    assert cmd.returncode == 1
    assert "[effopt] store_url_cmd is not an effopt option" in cmd.stderr


def test_readme_configuration_table_is_current():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert markdown_table() in readme, "README's [effopt] table is stale: python -m effopt config show --markdown"


def test_the_cli_reads_make_runs_airflow_home_and_creates_nothing_in_the_users_home(tmp_path):
    """``.venv/bin/effopt usage`` with AIRFLOW_HOME unset reads the checkout's .airflow (make run's), and a read
    never creates the effopt store, nor anything under ~/airflow."""
    import subprocess
    import sys

    from effopt.cli import _CHECKOUT, default_airflow_home

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"HOME": str(tmp_path), "PYTHONPATH": os.path.join(REPO, "plugins")})
    res = subprocess.run([sys.executable, "-m", "effopt", "usage", "--dag", "no_such_dag_here"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "airflow").exists()
    saved = os.environ.pop("AIRFLOW_HOME")
    try:
        default_airflow_home()
        assert os.environ["AIRFLOW_HOME"] == str(_CHECKOUT / ".airflow")
    finally:
        os.environ["AIRFLOW_HOME"] = saved


@pytest.mark.parametrize("key", [o.key for o in OPTIONS if o.kind in ("int", "float")])
@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "1e400"])
def test_every_number_rejects_infinities_and_nan(key, raw):
    """inf once passed config check and then broke every cached call (OverflowError in the lock lease)."""
    with pytest.raises(ConfigError, match=rf"\[effopt\] {key} = '{raw}' is invalid"):
        Settings.from_mapping({key: raw}, "/h")


def test_every_number_has_bounds_and_says_them():
    numbers = [o for o in OPTIONS if o.kind in ("int", "float")]
    assert numbers and all(o.minimum is not None and o.maximum is not None for o in numbers)
    with pytest.raises(ConfigError, match=r"cache_timeout_s = '601' is invalid; accepted values: a number >= 0.1 "
                                          r"and <= 600"):
        Settings.from_mapping({"cache_timeout_s": "601"}, "/h")


def test_a_short_cache_secret_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as err:
        Settings.from_mapping({"cache_secret": "hunter2"}, "/h")
    assert "cache_secret is invalid: it has 7 character(s), it needs at least 16" in str(err.value)
    assert "hunter2" not in str(err.value)
    assert Settings.from_mapping({"cache_secret": ""}, "/h").cache_secret == ""  # unset: the local backend's own


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg2://effopt:s3cret@db:5432/effopt", "postgresql+psycopg2://effopt:***@db:5432/effopt"),
    ("postgresql://effopt:pa/ss#wo?rd@db/effopt", "postgresql://effopt:***@db/effopt"),  # unquoted / # ? in it
    ("postgresql://effopt:p@ss@db/effopt", "postgresql://effopt:***@db/effopt"),
    ("sqlite:////srv/airflow/effopt.db", "sqlite:////srv/airflow/effopt.db"),
])
def test_config_show_masks_passwords_inside_urls_however_malformed(url, shown):
    described = dict(Settings.from_mapping({"store_url": url}, "/h").describe())
    assert described["store_url"] == shown


def test_an_invalid_url_value_is_named_without_its_password():
    with pytest.raises(ConfigError) as err:
        Settings.from_mapping({"cache_timeout_s": "redis://u:pa/ss@h"}, "/h")
    assert "pa/ss" not in str(err.value) and "redis://u:***@h" in str(err.value)


def test_schedules_are_cron_expressions_or_presets():
    assert Settings.from_mapping({"rightsizing_schedule": "*/30 * * * *"}, "/h").rightsizing_schedule == "*/30 * * * *"
    with pytest.raises(ConfigError, match="waste_report_schedule = 'every monday' is invalid; accepted values: a cron"):
        Settings.from_mapping({"waste_report_schedule": "every monday"}, "/h")
