"""Webhook pieces without a database: the SSRF guard, the configuration of
endpoints and secrets, and signatures checked by an independent Standard
Webhooks implementation (the `standardwebhooks` package)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from procrastinate import jobs as pjobs
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from daemon.config import Settings, load_settings
from daemon.errors import ConfigError
from daemon.maintenance.webhooks import DeliveryAbandoned, DeliveryFailed, WebhookRetry
from daemon.webhooks import signing
from daemon.webhooks.addresses import DeliveryRefused, check_notify_url, refusal, resolve
from daemon.webhooks.endpoints import EVENT_TYPES, Endpoint, host_matches, secret_bytes
from daemon.webhooks.sender import post

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not to bind
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "reserved"),
        ("192.0.2.1", "private"),
        ("240.0.0.1", "address"),  # reserved; Python files it under private
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_only_public_addresses_pass(address: str, reason: str | None) -> None:
    said = refusal(ipaddress.ip_address(address))
    assert (said is None) if reason is None else (said is not None and reason in said)


async def test_resolve_refuses_non_public_hosts_unless_listed() -> None:
    with pytest.raises(DeliveryRefused, match="loopback"):
        await resolve("127.0.0.1", 80, ())
    with pytest.raises(DeliveryRefused, match=r"localhost resolves to .* loopback"):
        await resolve("localhost", 80, ())
    assert await resolve("127.0.0.1", 80, ("127.0.0.1",)) == ipaddress.ip_address("127.0.0.1")
    assert (await resolve("localhost", 80, ("localhost",))).is_loopback
    # A metadata address stays refused, listed or not.
    with pytest.raises(DeliveryRefused, match="metadata"):
        await resolve("169.254.169.254", 80, ("169.254.169.254",))
    # Numeric spellings resolve to what they mean.
    with pytest.raises(DeliveryRefused, match="loopback"):
        await resolve("2130706433", 80, ())


async def test_a_refused_destination_is_never_contacted() -> None:
    result = await post("http://127.0.0.1:9/hook", b"{}", {}, private_hosts=(), timeout=2)
    assert result.outcome == "refused" and result.status_code is None
    assert "EXPORTD_WEBHOOK_PRIVATE_HOSTS" in (result.error or "")


def test_notify_url_rules() -> None:
    allowed = ("hooks.example.com", "*.example.net")
    assert check_notify_url("https://hooks.example.com/x", allowed)
    assert check_notify_url("https://HOOKS.example.com./x", allowed)
    assert check_notify_url("http://deep.a.example.net/x", allowed)
    for bad in (
        "https://example.net/x",  # *.example.net is below it, not it
        "https://hooks.example.com.evil.org/",
        "ftp://hooks.example.com/",
        "https://u:p@hooks.example.com/",
        "http://[::1]/",
    ):
        with pytest.raises(ValueError, match=r"host|http|credentials"):
            check_notify_url(bad, allowed)
    assert host_matches("anything.example.org", ("*",))


def test_endpoints_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "exportd.toml"
    own = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    config.write_text(
        f'webhook_secret = "{SECRET}"\n'
        "[[webhooks]]\n"
        'url = "https://a.example.com/hook"\n'
        'events = ["export.completed"]\n'
        "[[webhooks]]\n"
        'url = "https://b.example.com/hook"\n'
        f'secret = "{own}"\n'
    )
    settings = load_settings(
        {"EXPORTD_CONFIG": str(config), "EXPORTD_WEBHOOK_URL": "https://c.example.com/"}
    )
    assert settings.webhook_endpoints == (
        Endpoint("https://c.example.com/", EVENT_TYPES, SECRET),
        Endpoint("https://a.example.com/hook", ("export.completed",), SECRET),
        Endpoint("https://b.example.com/hook", EVENT_TYPES, own),
    )
    assert SECRET not in repr(settings) and own not in repr(settings)
    as_json = json.dumps([{"url": "https://d.example.com/", "events": ["export.failed"]}])
    from_env = load_settings({"EXPORTD_WEBHOOKS": as_json, "EXPORTD_WEBHOOK_SECRET": SECRET})
    assert from_env.webhook_endpoints == (
        Endpoint("https://d.example.com/", ("export.failed",), SECRET),
    )


@pytest.mark.parametrize(
    ("environ", "variable", "reason"),
    [
        ({"EXPORTD_WEBHOOK_URL": "https://a.example.com/"}, "EXPORTD_WEBHOOK_SECRET", "sign"),
        ({"EXPORTD_WEBHOOK_ALLOWED_HOSTS": "a.example.com"}, "EXPORTD_WEBHOOK_SECRET", "sign"),
        ({"EXPORTD_WEBHOOK_SECRET": "not-a-whsec"}, "EXPORTD_WEBHOOK_SECRET", "whsec_"),
        ({"EXPORTD_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "EXPORTD_WEBHOOK_SECRET", "24 to 64"),
        ({"EXPORTD_WEBHOOK_SECRET": "whsec_!!!"}, "EXPORTD_WEBHOOK_SECRET", "base64"),
        (
            {"EXPORTD_WEBHOOK_SECRET": "whsec_" + base64.b64encode(bytes(32)).decode()},
            "EXPORTD_WEBHOOK_SECRET",
            "not random",
        ),
        ({"EXPORTD_WEBHOOK_URL": "file:///etc/passwd"}, "EXPORTD_WEBHOOK_URL", "http"),
        ({"EXPORTD_WEBHOOK_URL": "https://u:p@a.example.com/"}, "EXPORTD_WEBHOOK_URL", "cred"),
        ({"EXPORTD_WEBHOOKS": '[{"url": 1}]'}, "EXPORTD_WEBHOOKS", "entry 1"),
        ({"EXPORTD_WEBHOOKS": "not json"}, "EXPORTD_WEBHOOKS", "JSON"),
        (
            {"EXPORTD_WEBHOOKS": '[{"url": "https://a.example.com/", "events": ["x"]}]'},
            "EXPORTD_WEBHOOKS",
            "unknown event",
        ),
        ({"EXPORTD_WEBHOOK_PRIVATE_HOSTS": "*"}, "EXPORTD_WEBHOOK_PRIVATE_HOSTS", "one by one"),
        ({"EXPORTD_WEBHOOK_ALLOWED_HOSTS": "a/b"}, "EXPORTD_WEBHOOK_ALLOWED_HOSTS", "host"),
        ({"EXPORTD_WEBHOOK_RETRY_HOURS": "0"}, "EXPORTD_WEBHOOK_RETRY_HOURS", "hours"),
        ({"EXPORTD_WEBHOOK_TIMEOUT_SECONDS": "600"}, "EXPORTD_WEBHOOK_TIMEOUT_SECONDS", "60"),
    ],
)
def test_bad_webhook_settings_name_the_variable(
    environ: dict[str, str], variable: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    assert caught.value.variable == variable and reason in str(caught.value)


def test_signatures_verify_with_the_standardwebhooks_package() -> None:
    body = json.dumps({"type": "export.completed", "data": {"job": {"job_id": "x"}}}).encode()
    now = int(time.time())
    headers = signing.headers(secret_bytes(SECRET), "evt_1", now, body)
    receiver = Webhook(SECRET)
    assert receiver.verify(body, headers) == json.loads(body)
    # Their signature of the same message is ours, byte for byte.
    theirs = receiver.sign("evt_1", datetime.fromtimestamp(now, UTC), body.decode())
    assert headers["webhook-signature"] == theirs
    with pytest.raises(WebhookVerificationError):
        receiver.verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode()).verify(body, headers)


def test_retries_back_off_exponentially_within_the_window() -> None:
    retry = WebhookRetry(Settings(webhook_retry_base_seconds=10, webhook_retry_hours=24))
    assert [retry.delay(n) for n in range(4)] == [10, 20, 40, 80]
    assert retry.delay(20) == 3600  # at most an hour apart

    def job(since: datetime, attempts: int) -> pjobs.Job:
        return pjobs.Job(
            id=1,
            queue="webhooks",
            lock=None,
            queueing_lock=None,
            task_name="exportd.deliver_webhook",
            attempts=attempts,
            task_kwargs={"event_id": "e", "url": "u", "since": since.isoformat()},
        )

    now = datetime.now(UTC)
    decision = retry.get_retry_decision(exception=DeliveryFailed("HTTP 500"), job=job(now, 0))
    assert decision is not None and decision.retry_at is not None
    assert timedelta(seconds=9) < decision.retry_at - now < timedelta(seconds=11)
    # The next attempt would fall after the window: given up.
    old = now - timedelta(hours=23, minutes=59, seconds=55)
    assert retry.get_retry_decision(exception=DeliveryFailed("x"), job=job(old, 0)) is None
    # A destination the guard refuses is not retried at all.
    refused = DeliveryAbandoned("loopback")
    assert retry.get_retry_decision(exception=refused, job=job(now, 0)) is None
