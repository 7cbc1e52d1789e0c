"""The package surface: what ``from sparkv import *`` and ``dir(sparkv)`` offer, and the version."""

from __future__ import annotations

import re

import sparkv


def test_every_public_name_resolves_and_dir_lists_it():
    assert {"generate", "generate_many", "load_model", "Press", "memory_report", "parse_press"} <= set(sparkv.__all__)
    for name in sparkv.__all__:
        assert getattr(sparkv, name) is not None
        assert name in dir(sparkv)
    namespace: dict = {}
    exec("from sparkv import *", namespace)
    assert set(sparkv.__all__) <= set(namespace)


def test_version_from_the_package_and_the_command_line():
    from typer.testing import CliRunner

    from sparkv.cli import app

    assert re.fullmatch(r"\d+\.\d+\.\d+.*|0\+unknown", sparkv.__version__)
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"sparkv {sparkv.__version__}"
