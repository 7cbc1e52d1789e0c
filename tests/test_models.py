"""sparkv.models: packaged GGUF models cut into parts (assembly order, checksum, missing parts), GGUF paths."""

from __future__ import annotations

import hashlib
import re
import sys

import pytest

from sparkv import models
from sparkv.models import PackagedModel, packaged_gguf, resolve_model_path


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three part packages on sys.path holding 11 parts whose numeric order differs from their string order."""
    site = tmp_path / "site"
    payload = b""
    names = []
    chunks = {f"part{i:d}.bin": bytes([i]) * (100 + i) for i in range(1, 12)}  # part10 sorts before part2 as text
    layout = {"fakemodel_part1": ["part1.bin", "part2.bin", "part10.bin"],
              "fakemodel_part2": ["part3.bin", "part4.bin", "part5.bin", "part6.bin"],
              "fakemodel_part3": ["part7.bin", "part8.bin", "part9.bin", "part11.bin"]}
    for package, parts in layout.items():
        data = site / package / "data"
        data.mkdir(parents=True)
        (site / package / "__init__.py").write_text("raise ImportError('never import model packages')\n")
        for name in parts:
            (data / name).write_bytes(chunks[name])
        names.append(package)
    order = sorted(layout["fakemodel_part1"], key=lambda n: int(n[4:-4])) + layout["fakemodel_part2"] + \
        layout["fakemodel_part3"]
    payload = b"".join(chunks[n] for n in order)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("SPARKV_CACHE", str(tmp_path / "cache"))
    for package in names:
        sys.modules.pop(package, None)
    return names, payload


def test_parts_are_joined_in_numeric_order_and_checked(fake_parts, monkeypatch):
    names, payload = fake_parts
    spec = PackagedModel(tuple(names), "fake.gguf", "fake", parts_glob="data/part*.bin",
                         sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(models.PACKAGED_MODELS, "fake", spec)
    path = packaged_gguf("fake")
    assert path.read_bytes() == payload
    assert packaged_gguf("fake") == path  # assembled once, then reused


def test_wrong_checksum_is_refused_and_leaves_nothing(fake_parts, monkeypatch):
    names, _ = fake_parts
    spec = PackagedModel(tuple(names), "fake.gguf", "fake", parts_glob="data/part*.bin", sha256="0" * 64)
    monkeypatch.setitem(models.PACKAGED_MODELS, "fake", spec)
    with pytest.raises(RuntimeError, match="sha256"):
        packaged_gguf("fake")
    assert not list((models.cache_dir() / "gguf").glob("fake.gguf*"))


def test_missing_part_package_names_it(fake_parts, monkeypatch):
    names, _ = fake_parts
    spec = PackagedModel((*names, "fakemodel_part4"), "fake.gguf", "fake", parts_glob="data/part*.bin")
    monkeypatch.setitem(models.PACKAGED_MODELS, "fake", spec)
    with pytest.raises(FileNotFoundError, match="fakemodel-part4"):
        packaged_gguf("fake")


def test_unknown_alias_and_missing_gguf_file(tmp_path):
    with pytest.raises(ValueError, match="qwen2.5-coder-1.5b"):
        packaged_gguf("gpt-5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nothing.gguf"))
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"  # hub ids pass through



def test_a_typo_of_a_packaged_alias_is_refused_at_once_and_no_name_is_refused(tmp_path):
    """No hub lookup (a minute of retries offline) for a name one typo away from a packaged alias."""
    for typo, alias in (("smolm2", "smollm2"), ("SmolLM2", "smollm2"), ("qwen2.5-coder-15b", "qwen2.5-coder-1.5b")):
        with pytest.raises(ValueError, match=f"did you mean '{re.escape(alias)}'"):
            resolve_model_path(typo)
    assert resolve_model_path("gpt2") == "gpt2"  # a bare hub id far from every alias passes through
    for bad in (None, 3):
        with pytest.raises(ValueError, match="name_or_path must be a packaged alias"):
            resolve_model_path(bad)
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(tmp_path) == str(tmp_path)  # a Path works like its string
