"""One source for names: the CLI's choices and the library's tables name exactly the same things."""

import click
import pytest

from mnist_cli import settings
from mnist_cli.cli import main
from mnist_cli.errors import SettingsError
from mnist_cli.losses import LOSSES
from mnist_cli.model import INITS
from mnist_cli.rounding import DTYPES
from mnist_cli.settings import PRESETS, TrainConfig, train_config


def _choices(command: str, option: str) -> list[str]:
    param = next(p for p in main.commands[command].params if p.name == option)
    assert isinstance(param.type, click.Choice)
    return list(param.type.choices)


def test_the_tables_and_the_settings_name_the_same_things():
    assert list(LOSSES) == list(settings.LOSS_NAMES)
    assert list(DTYPES) == list(settings.DTYPE_NAMES)
    assert list(INITS) == list(settings.INIT_NAMES)


def test_the_cli_offers_exactly_the_settings_choices():
    assert _choices("train", "loss") == list(settings.LOSS_NAMES)
    assert _choices("train", "dtype") == list(settings.DTYPE_NAMES)
    assert _choices("train", "init") == list(settings.INIT_NAMES)
    assert _choices("train", "preset") == list(PRESETS)


@pytest.mark.parametrize("loss", settings.LOSS_NAMES)
def test_compare_accepts_every_loss(loss, monkeypatch):
    from click.testing import CliRunner

    r = CliRunner().invoke(main, ["compare", "--losses", f"{loss},nope", "--offline"])
    assert r.exit_code == 2 and "'nope' is not one of" in r.output and loss in r.output


def test_every_preset_is_a_valid_config():
    for name in PRESETS:
        train_config(name)


def test_train_config_merges_a_preset_with_overrides():
    c = train_config("best", lr=2.0, steps=None)
    assert (c.epochs, c.lr, c.average, c.average_epochs) == (12, 2.0, True, 8)
    c = train_config("best", steps=300)  # explicit steps drop the preset's epochs
    assert c.steps == 300 and c.epochs is None
    assert train_config(average_epochs=3).average
    with pytest.raises(SettingsError) as err:
        train_config(steps=5, epochs=1)
    assert err.value.settings == ("steps", "epochs")
    assert err.value.text(lambda n: "--" + n) == "--steps / --epochs: give --steps or --epochs, not both"


def test_settings_errors_name_the_setting_not_a_flag():
    with pytest.raises(SettingsError) as err:
        TrainConfig(lr=-1.0).validate()
    assert err.value.settings == ("lr",) and "--" not in str(err.value)
