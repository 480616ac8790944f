"""A real S3 HTTP endpoint on loopback (moto's threaded server) for tests.

``s3_server`` (session) yields the endpoint URL; ``s3_bucket`` (function)
creates a fresh bucket and yields its name. Dummy credentials are set through
``monkeypatch`` inside ``s3_bucket`` only, and the shared AWS config files are
pointed away, so a developer's real credentials are never used.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int) -> Any:
    """Start a ``ThreadedMotoServer`` on ``127.0.0.1:port`` and return it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


def set_dummy_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: Any) -> None:
    """Point boto3's credential chain at dummy values only."""
    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    empty = tmp_path_factory.mktemp("aws") / "none"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # No instance-metadata lookups on a CI machine.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on loopback, for the whole session."""
    server = start_moto(0)
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(
    s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: Any
) -> Iterator[str]:
    """A fresh, empty bucket on ``s3_server``; dummy credentials in the environment."""
    import boto3

    set_dummy_credentials(monkeypatch, tmp_path_factory)
    name = f"edge-{uuid.uuid4().hex[:16]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        # Keep moto's memory flat across a long session.
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket=name, Key=obj["Key"])
            client.delete_bucket(Bucket=name)
        except Exception:  # cleanup only; the bucket may be gone already
            pass
        client.close()
