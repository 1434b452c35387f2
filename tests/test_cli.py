"""The kryflow command line as a user calls it."""

from __future__ import annotations

import subprocess

from conftest import BIN, ROOT


def _kryflow(*args, cwd=ROOT):
    return subprocess.run([str(BIN / "kryflow"), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_the_stages():
    proc = _kryflow("--help")
    assert proc.returncode == 0
    for sub in ("run", "validate", "generate", "train", "evaluate", "data", "where"):
        assert sub in proc.stdout


def test_validate_default_config():
    proc = _kryflow("validate", "config/config.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "32 training cells" in proc.stdout


def test_validate_reports_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config" / "config.yaml").read_text().replace("batch_size: 8", "batch_size: -8"))
    proc = _kryflow("validate", str(bad))
    assert proc.returncode == 2
    assert "training.batch_size" in proc.stderr
    assert "Traceback" not in proc.stderr
