"""mailgate refuses to run on a pyOpenSSL that is not bound to the system libssl.so.3.

The bad case is the one a user meets: a venv without Debian's packages, where pip brought
PyPI's cryptography wheel and its private OpenSSL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """\
daemon off;
mail {
    server {
        listen 127.0.0.1:1143;
        protocol imap;
        proxy_pass 127.0.0.1:1;
    }
}
"""


@pytest.fixture(scope="module")
def pypi_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with PyPI's pyOpenSSL/cryptography and mailgate installed from this checkout."""
    venv = tmp_path_factory.mktemp("pypi-venv")
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "pyopenssl", "cffi"], check=True, timeout=300)
    subprocess.run([*pip, str(ROOT)], check=True, timeout=300, cwd="/")
    return venv


def test_t_refuses_pypi_openssl_and_says_how_to_fix_it(pypi_venv: Path, tmp_path: Path) -> None:
    conf = tmp_path / "mailgate.conf"
    conf.write_text(CONFIG)
    result = subprocess.run(
        [str(pypi_venv / "bin" / "mailgate"), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert result.returncode == 1
    assert "runs on a different OpenSSL copy than the system's" in result.stderr
    assert "python3-openssl" in result.stderr
    assert f"configuration file {conf} test failed" in result.stderr


def test_v_capital_reports_the_failed_check(pypi_venv: Path) -> None:
    result = subprocess.run(
        [str(pypi_venv / "bin" / "mailgate"), "-V"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert result.returncode == 0
    assert "libssl check failed" in result.stderr


def test_the_project_venv_passes_the_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailgate.master", "-V"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "libssl check passed" in result.stderr
