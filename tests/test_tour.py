"""The README's tour works as written, against a real gunicorn."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT, TokenFactory, running_gunicorn


def tour_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## A ten-minute tour") :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_every_command_of_the_tour_runs(
    database_url: str, make_token: TokenFactory, tmp_path: Path
) -> None:
    token = make_token(roles=("Administrator",))
    script = tour_script().replace("export TOKEN=iat_...", f"export TOKEN={token}")
    with running_gunicorn(database_url) as url:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert '"viewCount":2' in result.stdout.replace(" ", "")
    assert "Tour board" in result.stdout
    assert (tmp_path / "trail.csv").read_text().startswith("id,type,action,targetId")
    assert "Successfully verified the integrity of the audit trail" in result.stdout
