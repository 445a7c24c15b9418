"""The client-only distribution (trackd-client/): built and installed offline into an empty
virtual environment, where `trackd.client` works with nothing else installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT


def test_trackd_client_installs_alone_and_imports_with_the_standard_library_only(
        tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-build-isolation", "--no-index", "--disable-pip-version-check", "--quiet",
         str(ROOT / "trackd-client")], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    probe = textwrap.dedent("""
        import importlib.metadata, importlib.util, json, sys
        import trackd.client as analytics
        client = analytics.Client("wk_x", send=False)
        queued, message = client.track("user123", "Product Purchased", {"price": 99.99})
        try:
            client.track("user123", "$pageview")
            refused = None
        except analytics.ValidationError as exc:
            refused = str(exc)
        print(json.dumps({
            "queued": queued, "event": message["event"], "refused": refused,
            "distributions": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
            "server": importlib.util.find_spec("trackd.app") is not None,
            "third_party": sorted({m.split(".")[0] for m in sys.modules}
                                  - set(sys.stdlib_module_names) - {"trackd", "__main__"}),
        }))
    """)
    result = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"queued": True, "event": "Product Purchased",
                    "refused": "Event name cannot start with '$'",
                    "distributions": ["trackd-client"], "server": False, "third_party": []}
