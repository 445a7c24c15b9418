"""A PEP 517 build backend for trackd-client, in the standard library only.

It packs `trackd/__init__.py`, `trackd/py.typed`, `trackd/client/` and `trackd/messages/` from
the repository (the folder above this one; inside an sdist, this folder) into a pure-Python
wheel. The version is trackd's own `__version__`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

NAME = "trackd_client"
HERE = Path(__file__).resolve().parent
PACKAGES = ("client", "messages")
SUMMARY = "trackd's Python client (Segment analytics-python compatible); standard library only."


def _root() -> Path:
    return HERE if (HERE / "trackd").is_dir() else HERE.parent


def _version() -> str:
    text = (_root() / "trackd" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if found is None:
        raise RuntimeError("trackd/__init__.py has no __version__")
    return found.group(1)


def _files() -> list[tuple[str, Path]]:
    """(path in the wheel, file) for every file shipped."""
    package = _root() / "trackd"
    files = [("trackd/__init__.py", package / "__init__.py"), ("trackd/py.typed",
                                                               package / "py.typed")]
    for name in PACKAGES:
        files += [(f"trackd/{name}/{f.name}", f) for f in sorted((package / name).glob("*.py"))]
    return files


def _metadata() -> str:
    return (f"Metadata-Version: 2.1\nName: trackd-client\nVersion: {_version()}\n"
            f"Summary: {SUMMARY}\nLicense: MIT\nRequires-Python: >=3.11\n")


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings: object = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: object = None) -> list[str]:
    return []


def build_wheel(wheel_directory: str, config_settings: object = None,
                metadata_directory: str | None = None) -> str:
    dist_info = f"{NAME}-{_version()}.dist-info"
    name = f"{NAME}-{_version()}-py3-none-any.whl"
    entries = [(path, file.read_bytes()) for path, file in _files()]
    entries += [
        (f"{dist_info}/METADATA", _metadata().encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: trackd-client build_client\n"
                               b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{dist_info}/top_level.txt", b"trackd\n"),
    ]
    record = [_record_line(path, data) for path, data in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(Path(wheel_directory) / name, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in entries:
            wheel.writestr(path, data)
    return name


def build_sdist(sdist_directory: str, config_settings: object = None) -> str:
    base = f"{NAME}-{_version()}"
    name = f"{base}.tar.gz"
    with tarfile.open(Path(sdist_directory) / name, "w:gz") as sdist:
        for extra in ("pyproject.toml", "build_client.py"):
            sdist.add(HERE / extra, f"{base}/{extra}")
        for path, file in _files():
            sdist.add(file, f"{base}/{path}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        sdist.addfile(info, io.BytesIO(data))
    return name
