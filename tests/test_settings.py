"""One source for names and limits: the CLI's choices and the library's tables name exactly the same things,
every preset is a valid configuration, and values a dtype cannot hold are refused."""

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


def test_the_cli_offers_exactly_the_settings_choices(cli):
    for command in ("train", "evaluate"):
        assert _choices(command, "dtype") == list(settings.DTYPE_NAMES)
        assert _choices(command, "precision") == list(settings.PRECISION_NAMES)
    assert _choices("train", "loss") == list(settings.LOSS_NAMES)
    assert _choices("train", "init") == list(settings.INIT_NAMES)
    assert _choices("train", "preset") == list(PRESETS)
    # compare takes comma-separated lists: a name it does not know is refused with the names it does
    for option, names in (("--losses", settings.LOSS_NAMES), ("--dtype", settings.DTYPE_NAMES),
                          ("--precision", settings.PRECISION_NAMES)):
        r = cli("compare", option, f"{names[-1]},nope", data_dir=None)
        assert r.exit_code == 2 and "'nope' is not one of " in r.output, r.output
        assert r.output.split("'nope' is not one of ")[1].strip().split(", ") == list(names)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_config(name):
    TrainConfig(**PRESETS[name]).validate()  # the table's entry as it stands
    train_config(name)  # and as the CLI merges it


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


def test_preset_best_is_named_in_the_report():
    from mnist_cli.report.train import changed_text
    from mnist_cli.settings import changed_settings

    changed = changed_settings(train_config("best"), "best")
    assert changed == {"lr": 1.0, "epochs": 12, "average_epochs": 8}
    assert changed_text(changed, "best") == "preset best: lr 1, epochs 12, averaged over the last 8 epochs"


def test_settings_errors_name_the_setting_not_a_flag():
    with pytest.raises(SettingsError) as err:
        TrainConfig(lr=-1.0).validate()
    assert err.value.settings == ("lr",) and "--" not in str(err.value)


# --- values the dtype cannot hold are refused ---


def test_dtype_max_is_numpys():
    """Each dtype's largest value is the one NumPy's (ml_dtypes') finfo gives, through precision's lookup: plain
    ``np.finfo("bfloat16")`` knows bfloat16 only after something imported ml_dtypes."""
    from mnist_cli.rounding import finfo
    from mnist_cli.settings import DTYPE_MAX, DTYPE_NAMES

    assert set(DTYPE_MAX) == set(DTYPE_NAMES)
    assert all(DTYPE_MAX[name] == float(finfo(name).max) for name in DTYPE_NAMES)


@pytest.mark.parametrize("scale, dtype, ok", [(1e300, "float32", False), (3.5e38, "float32", False),
                                              (3e38, "float32", True), (1e300, "float64", True)])
def test_input_scales_the_dtype_cannot_hold_are_refused(scale, dtype, ok):
    if ok:
        assert train_config(input_scale=scale, dtype=dtype).input_scale == scale
    else:
        with pytest.raises(SettingsError) as info:
            train_config(input_scale=scale, dtype=dtype)
        assert "input_scale" in info.value.settings and f"largest {dtype}" in str(info.value)
