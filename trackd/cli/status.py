"""`trackd status`: is the server up, can it take messages, is every stage keeping up, disk."""

from __future__ import annotations

import shutil
from typing import Any

import click
import httpx

from trackd.admin.health import directory_size
from trackd.cli.common import config_options, load_settings, one_line_errors
from trackd.console.html import duration, size
from trackd.plans.plans import read_status
from trackd.server.supervisor import read_server_info, run_dir_of


def _get(client: httpx.Client, path: str) -> tuple[int, dict[str, Any]]:
    response = client.get(path)
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    return response.status_code, doc if isinstance(doc, dict) else {}


@click.command()
@config_options
@one_line_errors
def status(config_path: str | None, data_dir: str | None) -> None:
    """Show whether the server is up and healthy, each stage's state and lag, and disk.

    Exits 0 when the server is up and ready, 1 when it is down or not ready.
    """
    settings = load_settings(config_path, data_dir)
    info = read_server_info(settings)
    lines: list[str] = []
    ok = False
    if info is None:
        lines.append(f"server: not running (data in {settings.data_dir})")
    else:
        host = "127.0.0.1" if info.host in ("0.0.0.0", "::", "") else info.host
        base = f"http://[{host}]:{info.port}" if ":" in host else f"http://{host}:{info.port}"
        try:
            with httpx.Client(base_url=base, timeout=10) as client:
                health_code, health = _get(client, "/healthz")
                ready_code, ready = _get(client, "/readyz")
        except httpx.HTTPError as exc:
            lines.append(f"server: pid {info.pid} on {base}, not answering ({exc})")
        else:
            if health_code == 200:
                lines.append(f"server: up on {base} (pid {info.pid}), accepting messages")
            else:
                lines.append(f"server: up on {base} (pid {info.pid}), NOT accepting messages: "
                             f"{health.get('reason', health_code)}")
            ok = health_code == 200 and ready_code == 200
            state = "ready" if ready_code == 200 else f"not ready: {ready.get('reason', '?')}"
            lines.append(f"pipeline: {state}")
            for stage in ready.get("stages", []):
                lag = stage.get("lag", {})
                lines.append(f"  {stage.get('name', '?'):<28} {stage.get('state', '?'):<9} "
                             f"{lag.get('messages', 0):>10,} msgs behind, oldest "
                             f"{duration(float(lag.get('seconds', 0)))}")
            for source, plan in sorted(read_status(run_dir_of(settings) / "plans").items()):
                versions = ", ".join(str(v) for v in plan.get("versions", []))
                error = plan.get("error")
                lines.append(f"plan {source}: version {versions}" + (
                    f"; last reload failed (previous plan kept): {error}" if error else ""))
    if settings.data_dir.exists():
        free = shutil.disk_usage(settings.data_dir).free
        lines.append(f"disk: {size(directory_size(settings.data_dir))} in "
                     f"{settings.data_dir}, {size(free)} free")
    click.echo("\n".join(lines))
    if not ok:
        click.get_current_context().exit(1)
