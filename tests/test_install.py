"""The repository's top-level models/ and inference/ install as pyronas.models/.inference."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import pyronas, pyronas.models, pyronas.inference, pyronas.genotype.bundled;"
    "print(pyronas.models.__file__); print(pyronas.inference.__file__)"
)


def _run(code: str, cwd: Path, env_path: str | None = None) -> list[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if env_path is not None:
        env["PYTHONPATH"] = env_path
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_editable_install_imports_top_level_folders(tmp_path):
    # The test environment holds an editable install: from outside the repository the
    # subpackages resolve to the repository's top-level folders.
    models_file, inference_file = _run(PROBE, cwd=tmp_path)
    assert Path(models_file) == REPO / "models" / "__init__.py"
    assert Path(inference_file) == REPO / "inference" / "__init__.py"


@pytest.mark.timeout(300)
def test_regular_install_imports_top_level_folders(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    wheels = list(wheel_dir.glob("pyronas-*.whl"))
    assert len(wheels) == 1
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheels[0]),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    # models/ and inference/ must not land as top-level packages of their own.
    assert not (target / "models").exists()
    assert not (target / "inference").exists()
    models_file, inference_file = _run(PROBE, cwd=tmp_path, env_path=str(target))
    assert Path(models_file).is_relative_to(target / "pyronas" / "models")
    assert Path(inference_file).is_relative_to(target / "pyronas" / "inference")
    assert len(list((target / "pyronas" / "genotype" / "bundled").glob("*.json"))) >= 5
    # the NAS-Bench-201 table and its licence notice ship inside the package and are read there
    data = target / "pyronas" / "nb201_data"
    assert (data / "nb201_accuracy_12epoch.csv").stat().st_size > 1_000_000
    assert "MIT License" in (data / "README.md").read_text()
    probe = ("from pyronas.nb201 import bundled_table, lookup; "
             "print(len(bundled_table()), lookup('|skip_connect~0|+|skip_connect~0|skip_connect~1|"
             "+|skip_connect~0|skip_connect~1|skip_connect~2|').index)")
    assert _run(probe, cwd=tmp_path, env_path=str(target)) == ["15625", "1835"]
    # the retraining presets ship inside the package and are found by name
    probe = ("from pyronas.config import preset_path; "
             "print(preset_path('retrain_fashion_mnist'))")
    (preset,) = _run(probe, cwd=tmp_path, env_path=str(target))
    assert Path(preset) == target / "pyronas" / "presets" / "retrain_fashion_mnist.yaml"
