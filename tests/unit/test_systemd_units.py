"""The unit files in systemd/ pass `systemd-analyze verify` and say what the docs promise.

`systemd-analyze verify` loads each unit the way systemd would (without a
running systemd: it works as root or not, in a container too) and reports
unknown keys, bad values, missing referenced units and missing executables.
It reports some things with exit status 0 (an unknown key is a warning), so
the test reads its output rather than its exit status: every line must be
one of the two expected complaints below, nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from daemon.config import Settings

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT_FILES = sorted(SYSTEMD_DIR.glob("*.service"))
EXECUTABLE = "/opt/exportd/bin/exportd"
# `systemd-analyze verify` takes a template only through one of its instances.
TEMPLATE_INSTANCE = "1"
DEFAULT_GRACE_SECONDS = Settings().shutdown_grace_seconds
# The exit status of a configuration error (docs/operations.md, daemon.cli.main.EXIT_CONFIG).
CONFIG_ERROR_STATUS = "2"

# The one executable every unit runs is not installed on a development or CI
# machine. systemd 252 prints exactly this (the unit name comes first).
MISSING_EXECUTABLE = re.compile(
    r"(?P<unit>\S+\.service): Command " + re.escape(EXECUTABLE) + r" is not executable: "
    r"No such file or directory"
)
# A unit named in Requires= (pulled in and ordered) that this machine does not
# have, such as postgresql.service where PostgreSQL runs elsewhere. Wants= and
# After= on a missing unit print nothing. exportd's own units are always in
# the directory under test, so their absence is a real error and not matched.
MISSING_FOREIGN_UNIT = re.compile(
    r"(?P<unit>\S+\.service): Failed to create (?P=unit)/start: "
    r"Unit (?P<missing>(?!exportd)\S+) not found\."
)
EXPECTED_COMPLAINTS = (MISSING_EXECUTABLE, MISSING_FOREIGN_UNIT)


def verify_name(unit_file: Path) -> str:
    """The name a unit is verified under: a template gets an instance name."""
    name = unit_file.name
    if name.endswith("@.service"):
        return name.replace("@.service", f"@{TEMPLATE_INSTANCE}.service")
    return name


@pytest.fixture(scope="module")
def units_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All units side by side (so Requires=exportd-migrate.service resolves)."""
    directory = tmp_path_factory.mktemp("units")
    for unit_file in UNIT_FILES:
        shutil.copyfile(unit_file, directory / verify_name(unit_file))
    return directory


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(
            "systemd-analyze is not on PATH: install Debian's `systemd` package "
            "(apt-get install systemd; .ci/run does this before `make test`)",
            pytrace=False,
        )
    return path


def verify(unit_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # The default level, whatever the caller's environment says: warnings
        # (unknown keys, bad values) must show, debug chatter must not.
        "SYSTEMD_LOG_LEVEL": "info",
        "SYSTEMD_LOG_TARGET": "console",
        "SYSTEMD_LOG_COLOR": "0",
        "SYSTEMD_LOG_LOCATION": "0",
        "SYSTEMD_LOG_TIME": "0",
        "SYSTEMD_LOG_TID": "0",
        "SYSTEMD_PAGER": "",
    }
    # --man=no: do not run man(1) for Documentation=man: links (it may not be
    # installed; the units link to a file anyway).
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def complaints(result: subprocess.CompletedProcess[str]) -> tuple[list[str], list[str]]:
    """The output lines split into (expected, unexpected)."""
    expected: list[str] = []
    unexpected: list[str] = []
    for line in (result.stdout + result.stderr).splitlines():
        if not line.strip():
            continue
        if any(pattern.fullmatch(line.strip()) for pattern in EXPECTED_COMPLAINTS):
            expected.append(line)
        else:
            unexpected.append(line)
    return expected, unexpected


def test_there_are_units() -> None:
    names = {unit_file.name for unit_file in UNIT_FILES}
    assert names == {
        "exportd-migrate.service",
        "exportd-worker.service",
        "exportd-worker@.service",
        "exportd-web.service",
    }


@pytest.mark.parametrize("unit_file", UNIT_FILES, ids=lambda path: path.name)
def test_systemd_analyze_verify(units_dir: Path, unit_file: Path) -> None:
    result = verify(units_dir / verify_name(unit_file))
    expected, unexpected = complaints(result)
    assert not unexpected, "systemd-analyze verify:\n" + result.stdout + result.stderr
    # A failing exit status must be explained by an expected complaint.
    assert result.returncode == 0 or expected, (
        f"systemd-analyze verify exited with {result.returncode}:\n" + result.stdout + result.stderr
    )


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The filter above lets real mistakes through (a warning exits 0)."""
    broken = tmp_path / "exportd-broken.service"
    broken.write_text(
        "[Unit]\nDescription=broken\nRequires=exportd-missing.service\n"
        f"[Service]\nExecStart={EXECUTABLE} worker\nProtectSytem=strict\n"
        "NoNewPrivileges=maybe\n"
    )
    _, unexpected = complaints(verify(broken))
    text = "\n".join(unexpected)
    assert "ProtectSytem" in text
    assert "maybe" in text
    assert "exportd-missing.service" in text


def test_the_expected_complaints_are_matched_exactly() -> None:
    matches = [
        "exportd-worker@1.service: Command /opt/exportd/bin/exportd is not executable: "
        "No such file or directory",
        "exportd-web.service: Failed to create exportd-web.service/start: "
        "Unit postgresql.service not found.",
    ]
    misses = [
        "exportd-web.service: Command /usr/bin/other is not executable: No such file or directory",
        "exportd-web.service: Command /opt/exportd/bin/exportd is not executable: "
        "Permission denied",
        "exportd-web.service: Failed to create exportd-web.service/start: "
        "Unit exportd-migrate.service not found.",
        "/tmp/x/exportd-web.service:3: Unknown key 'Foo' in section [Service], ignoring.",
    ]
    for line in matches:
        assert any(pattern.fullmatch(line) for pattern in EXPECTED_COMPLAINTS), line
    for line in misses:
        assert not any(pattern.fullmatch(line) for pattern in EXPECTED_COMPLAINTS), line


# ---------------------------------------------------------------------------
# Facts read from the files themselves.


def parse_unit(unit_file: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with all its values in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for raw in unit_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{unit_file.name}: continuation lines are not parsed"
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{unit_file.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{unit_file.name}: {line!r} is not key=value"
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def value(unit_file: Path, section: str, key: str) -> str:
    """The effective (last) value of a key."""
    values = parse_unit(unit_file).get(section, {}).get(key)
    assert values, f"{unit_file.name}: no {key}= in [{section}]"
    return values[-1]


def seconds(text: str) -> float:
    """A systemd time span in the forms the units use: `90`, `90s`, `1min 30s`."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
    total = 0.0
    parts = text.split()
    assert parts, "empty time span"
    for part in parts:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", part)
        assert match and match.group(2) in units, f"unsupported time span {text!r}"
        total += float(match.group(1)) * units[match.group(2)]
    return total


def unit(name: str) -> Path:
    path = SYSTEMD_DIR / name
    assert path.is_file(), f"{path} is missing"
    return path


WORKERS = ["exportd-worker.service", "exportd-worker@.service"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_is_notify_with_a_watchdog(name: str) -> None:
    worker = unit(name)
    assert value(worker, "Service", "Type") == "notify"
    assert value(worker, "Service", "NotifyAccess") == "main"
    assert seconds(value(worker, "Service", "WatchdogSec")) > 0
    assert value(worker, "Service", "Restart") == "on-failure"
    # Exit status 2 is a configuration error (EXIT_CONFIG): retrying cannot fix it.
    assert value(worker, "Service", "RestartPreventExitStatus") == CONFIG_ERROR_STATUS
    assert value(worker, "Service", "KillSignal") == "SIGTERM"
    assert value(worker, "Service", "KillMode") == "mixed"
    assert value(worker, "Service", "ExecStart") == f"{EXECUTABLE} worker"
    assert "exportd-migrate.service" in value(worker, "Unit", "Requires").split()
    assert "exportd-migrate.service" in value(worker, "Unit", "After").split()


@pytest.mark.parametrize("name", WORKERS)
def test_worker_stop_timeout_outlasts_the_graceful_drain(name: str) -> None:
    """systemd must not SIGKILL a worker that is still draining."""
    stop = seconds(value(unit(name), "Service", "TimeoutStopSec"))
    assert stop > max(DEFAULT_GRACE_SECONDS, 60)


def test_template_uses_the_instance_name_only_as_a_label() -> None:
    template = unit("exportd-worker@.service")
    assert "%i" in value(template, "Unit", "Description")
    assert value(template, "Service", "SyslogIdentifier") == "exportd-worker-%i"
    assert "%i" not in value(template, "Service", "ExecStart")


def test_web_unit() -> None:
    web = unit("exportd-web.service")
    assert value(web, "Service", "Type") == "exec"
    assert value(web, "Service", "ExecStart") == f"{EXECUTABLE} web"
    assert value(web, "Service", "Restart") == "on-failure"
    assert value(web, "Service", "RestartPreventExitStatus") == CONFIG_ERROR_STATUS
    assert seconds(value(web, "Service", "TimeoutStopSec")) == 30
    assert "exportd-migrate.service" in value(web, "Unit", "After").split()


def test_web_unit_descriptors_fit_the_connection_limit() -> None:
    """Each connection holds a descriptor, and a second one while a download
    streams its file; the pool, the log and Python need some more. A limit
    below that makes legitimate requests fail under a flood of connections."""
    limit = int(value(unit("exportd-web.service"), "Service", "LimitNOFILE"))
    assert limit >= 2 * Settings().max_connections + 256


HARDENING = {
    "User": "exportd",
    "Group": "exportd",
    "EnvironmentFile": "/etc/exportd/exportd.env",
    "StateDirectory": "exportd",
    "WorkingDirectory": "/var/lib/exportd",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": "@system-service",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "UMask": "0027",
}


@pytest.mark.parametrize("unit_file", UNIT_FILES, ids=lambda path: path.name)
def test_every_unit_is_hardened(unit_file: Path) -> None:
    service = parse_unit(unit_file)["Service"]
    # The effective value is the last assignment (an empty one resets a list),
    # except EnvironmentFile=, which adds files: the main one comes first and
    # is required (no leading '-').
    effective = {key: values[-1] for key, values in service.items()}
    effective["EnvironmentFile"] = service.get("EnvironmentFile", [""])[0]
    wrong = {
        key: effective.get(key)
        for key, expected in HARDENING.items()
        if effective.get(key) != expected
    }
    assert not wrong, f"{unit_file.name}: wrong or missing (actual values shown): {wrong}"
