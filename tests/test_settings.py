import subprocess

import pytest

from conftest import PYTHON, ROOT, job_env
from job.settings import RECIPES, Settings, SettingsError, env_name, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in [n for n in __import__("os").environ if n.startswith("LENET_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_train_both_variants_with_the_default_recipe():
    settings = load_settings()
    assert settings.variants == ("plain", "bn_dropout")
    assert settings.device == "auto" and settings.min_test_accuracy == 0.98 and settings.download is False
    assert settings.resolved_recipe() == RECIPES["default"]


def test_seed_recipe_is_the_tutorial(monkeypatch):
    monkeypatch.setenv("LENET_RECIPE", "seed")
    recipe = load_settings().resolved_recipe()
    assert (recipe.epochs, recipe.batch_size, recipe.learning_rate, recipe.momentum) == (8, 32, 0.01, 0.0)
    assert (recipe.normalize, recipe.max_shift, recipe.lr_schedule, recipe.weight_decay) == (False, 0, "constant", 0)
    assert recipe.augment is False and RECIPES["default"].augment is True


def test_explicit_settings_override_the_recipe(monkeypatch):
    monkeypatch.setenv("LENET_RECIPE", "seed")
    monkeypatch.setenv("LENET_EPOCHS", "3")
    monkeypatch.setenv("LENET_LEARNING_RATE", "0.2")
    monkeypatch.setenv("LENET_VARIANTS", " bn_dropout ")
    monkeypatch.setenv("LENET_AUGMENT", "true")
    settings = load_settings()
    recipe = settings.resolved_recipe()
    assert (recipe.epochs, recipe.learning_rate, recipe.batch_size, recipe.augment) == (3, 0.2, 32, True)
    assert settings.variants == ("bn_dropout",)


def test_dotenv_is_read(tmp_path):
    (tmp_path / ".env").write_text("LENET_EPOCHS=5\nLENET_DEVICE=CPU\n")
    settings = load_settings()
    assert settings.epochs == 5 and settings.device == "cpu"


def test_a_bad_setting_from_dotenv_says_it_came_from_there(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("LENET_EPOCHS=0\nLENET_EPOCHSS=3\n")
    with pytest.raises(SettingsError, match=r"^\.env: LENET_EPOCHSS: not a setting of this job \(did you mean"):
        load_settings()
    (tmp_path / ".env").write_text("LENET_EPOCHS=0\n")
    with pytest.raises(SettingsError, match=r"^\.env: LENET_EPOCHS=0: "):
        load_settings()
    monkeypatch.setenv("LENET_EPOCHS", "-1")  # the environment wins over .env, and is not .env
    with pytest.raises(SettingsError, match=r"^LENET_EPOCHS=-1: "):
        load_settings()


@pytest.mark.parametrize("kind, message", [
    ("folder", ".env is a folder, not a file"),  # was ignored: every setting meant for it kept its default
    ("pipe", ".env is not a regular file"),  # was a wait for a writer that never came
])
def test_a_dotenv_that_is_not_a_file_is_a_bad_setting(tmp_path, kind, message):
    import os

    (tmp_path / ".env").mkdir() if kind == "folder" else os.mkfifo(tmp_path / ".env")
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_a_dotenv_link_to_nothing_is_no_dotenv(tmp_path):
    (tmp_path / ".env").symlink_to(tmp_path / "missing")
    assert load_settings().epochs is None


@pytest.mark.parametrize("name, value, fragment", [
    ("EPOCHS", "abc", "LENET_EPOCHS=abc"),
    ("EPOCHS", "0", "LENET_EPOCHS=0"),
    ("BATCH_SIZE", "-3", "LENET_BATCH_SIZE=-3"),
    ("LEARNING_RATE", "0", "LENET_LEARNING_RATE=0"),
    ("MOMENTUM", "1.5", "LENET_MOMENTUM=1.5"),
    ("MIN_TEST_ACCURACY", "98", "LENET_MIN_TEST_ACCURACY=98"),
    ("VARIANTS", "plain,lenet7", "LENET_VARIANTS"),
    ("VARIANTS", "plain,plain", "LENET_VARIANTS"),
    ("VARIANTS", ",", "LENET_VARIANTS"),
    ("DEVICE", "tpu", "LENET_DEVICE=tpu"),
    ("DEVICE", "cuda:x", "LENET_DEVICE=cuda:x"),
    ("RECIPE", "fast", "LENET_RECIPE=fast"),
    ("DOWNLOAD", "maybe", "LENET_DOWNLOAD=maybe"),
    ("TRAIN_LIMIT", "70000", "LENET_TRAIN_LIMIT=70000"),
    ("SEED", "-1", "LENET_SEED=-1"),
    ("KEEP_RUNS", "0", "LENET_KEEP_RUNS=0"),
    ("CHAMPION_CHECK", "perhaps", "LENET_CHAMPION_CHECK=perhaps"),
    ("CHAMPION_TOLERANCE", "2", "LENET_CHAMPION_TOLERANCE=2"),
    ("EVAL_BATCH_SIZE", "0", "LENET_EVAL_BATCH_SIZE=0"),
    ("NUM_THREADS", "two", "LENET_NUM_THREADS=two"),
    ("PARITY_MAX_ABS_DIFF", "0", "LENET_PARITY_MAX_ABS_DIFF=0"),
    ("PARITY_MIN_AGREEMENT", "1.5", "LENET_PARITY_MIN_AGREEMENT=1.5"),
    ("TEST_LIMIT", "0", "LENET_TEST_LIMIT=0"),
    # A folder name in Latin-1 (not UTF-8) reaches Python as a lone surrogate, which the JSON report cannot hold.
    ("OUTPUT_DIR", "/srv/caf\udce9", "LENET_OUTPUT_DIR='/srv/caf\\udce9': is not valid UTF-8"),
    ("DATA_DIR", "d\udcff", "LENET_DATA_DIR='d\\udcff'"),
])
def test_invalid_values_name_the_variable(monkeypatch, name, value, fragment):
    monkeypatch.setenv(f"LENET_{name}", value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert fragment in message and "(allowed: " in message and "\n" not in message


def test_every_setting_is_documented_in_env_example():
    documented = {line.split("=")[0].lstrip("# ").strip()
                  for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert {env_name(name) for name in Settings.model_fields} <= documented


def test_bad_setting_exits_2_with_one_line_before_any_work(tmp_path):
    env = job_env(tmp_path, tmp_path / "no-data", epochs="many")
    done = subprocess.run([PYTHON, "-m", "job"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "LENET_EPOCHS=many" in done.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("uri, reason", [
    ("http://127.0.0.1:50OO", "its port is not a number 1-65535"),  # a letter O: the job trained, then failed
    ("http://127.0.0.1:99999", "its port is not a number 1-65535"),
    ("http://127.0.0.1:0", "its port is not a number 1-65535"),
    ("http://:5000", "it names no host"),
    ("http://" + "a" * 64 + ".example.com", "its host name cannot be encoded"),  # a DNS label is at most 63
])
def test_a_tracking_address_is_parsed_whole_before_any_work(monkeypatch, uri, reason):
    """As the MLflow client parses it, but before the training (and before MLflow is looked for): one line naming
    the value and what is wrong."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value).startswith(f"MLFLOW_TRACKING_URI={uri}: is not a usable address: {reason} (")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("uri, reason", [
    ("http://\u2603.net:5000", "Name '\u2603' is not a valid IDNA label"),  # Python's IDNA 2003 takes it, requests not
    ("http://[::1]x:5000", "'[::1]x:5000' is not a valid host or port"),
    ("http://ex%00ample", "invalid percent-encoded control char"),
    ("http://127.0.0.1:5000/?x=1", "it holds a query or a fragment"),  # MLflow's path would land in the query
    ("http://127.0.0.1:5000/#x", "it holds a query or a fragment"),
])
def test_a_tracking_address_that_mlflows_http_client_would_refuse_is_refused_first(monkeypatch, uri, reason):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(SettingsError, match="is not a usable address: ") as raised:
        load_settings()
    assert reason in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000/", "https://user:secret@mlflow.example.com/prefix",
                                 "http://[::1]:5000", "http://exämple.com:5000"])
def test_tracking_addresses_a_team_uses_pass(monkeypatch, uri):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert load_settings().mlflow_tracking_uri == uri


@pytest.mark.parametrize("share, allowed", [("0.9", True), ("0.91", False), ("0.999999", False), ("0", False)])
def test_the_extra_share_is_refused_where_its_epoch_could_not_be_held(monkeypatch, share, allowed):
    """A share s makes each epoch 1 / (1 - s) times MNIST's images: 0.999999 asked for 940 GB and ended in a
    MemoryError after the pictures were read. Up to 0.9 (ten times MNIST, 1.9 GB as float32) is allowed."""
    monkeypatch.setenv("LENET_EXTRA_SHARE", share)
    if allowed:
        assert load_settings().extra_share == float(share)
        return
    with pytest.raises(SettingsError, match=rf"^LENET_EXTRA_SHARE={share}: .*\(allowed: a number > 0 and <= 0.9: "):
        load_settings()


@pytest.mark.parametrize("name", ["LENET_PARITY_MAX_ABS_DIFF", "LENET_CHAMPION_TOLERANCE", "LENET_MIN_CONFIDENCE"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_infinity_and_nan_are_not_numbers_any_setting_takes(monkeypatch, name, value):
    """"inf" passed every bound of LENET_PARITY_MAX_ABS_DIFF (> 0) and turned the parity check off."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=rf"^{name}={value}: Input should be a finite number "):
        load_settings()
