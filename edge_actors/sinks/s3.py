"""S3 sink (AWS or any S3-compatible endpoint: MinIO, Ceph RGW, R2, ...).

boto3 is imported here only, and only when the first object is put, so the
uploader does not pay its ~100 ms / ~30 MB import unless S3 is configured.

Credentials come from boto3's standard chain (environment, shared files,
instance/container role); this module never reads, stores or logs them.

botocore's own retries are disabled (``max_attempts: 1``): retry timing is
the uploader's (:mod:`edge_actors.retry`), which never blocks its loop for
minutes inside one call and never drops data.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from edge_actors.keys import validate_prefix
from edge_actors.redact import redact_url
from edge_actors.sinks.base import PermanentSinkError, TransientSinkError, md5_hex_from_b64

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["S3Sink"]

logger = logging.getLogger(__name__)

_CREDENTIALS_HINT = (
    "fix the device's AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "~/.aws/credentials, or the instance role)"
)

# Error codes that retrying cannot fix: each gets a hint naming what to change.
# {bucket}, {key}, {region} and {endpoint} are filled in.
_PERMANENT_CODES: dict[str, str] = {
    "NoSuchBucket": "bucket '{bucket}' does not exist: create it or fix storage.bucket",
    "InvalidBucketName": "'{bucket}' is not a valid bucket name: fix storage.bucket",
    "AccessDenied": (
        "access denied: allow s3:PutObject on arn:aws:s3:::{bucket}/{prefix}* for the "
        "device's credentials, or fix storage.bucket/storage.prefix"
    ),
    "AllAccessDisabled": "all access to bucket '{bucket}' is disabled: use another bucket",
    "AccountProblem": "the bucket owner's account has a problem: contact the account owner",
    "InvalidAccessKeyId": "the access key id is unknown to {endpoint}: " + _CREDENTIALS_HINT,
    "SignatureDoesNotMatch": (
        "the secret key does not match the access key id: " + _CREDENTIALS_HINT
    ),
    "ExpiredToken": "the session token has expired: " + _CREDENTIALS_HINT,
    "InvalidToken": "the session token is invalid: " + _CREDENTIALS_HINT,
    "TokenRefreshRequired": "the session token must be refreshed: " + _CREDENTIALS_HINT,
    "RequestTimeTooSkewed": (
        "the device clock is too far off: enable NTP (timedatectl set-ntp true)"
    ),
    "PermanentRedirect": "bucket '{bucket}' is in another region: set storage.region",
    "AuthorizationHeaderMalformed": (
        "bucket '{bucket}' is in another region than '{region}': set storage.region"
    ),
    "IllegalLocationConstraintException": (
        "bucket '{bucket}' is in another region than '{region}': set storage.region"
    ),
    "InvalidRequest": "the endpoint rejected the request: check storage.endpoint_url/region",
    "NotImplemented": "the endpoint does not support this request: check storage.endpoint_url",
    "KMS.DisabledException": "the bucket's KMS key is disabled: enable it or change encryption",
    "InvalidObjectState": "the object is archived: check the bucket's lifecycle rules",
}

# 4xx codes that are worth a quick retry anyway.
_TRANSIENT_CODES = {
    "RequestTimeout",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequests",
    "BadDigest",
    "InvalidDigest",
    "IncompleteBody",
    "OperationAborted",
    "RequestTimeoutException",
}


class S3Sink:
    """Put objects into one bucket; see the module doc."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        verify_etag: bool = True,
    ) -> None:
        """Remember the target; the boto3 client is created on the first :meth:`put`.

        Args:
            bucket: bucket name.
            prefix: key prefix (validated; the uploader puts it in every key).
            region: AWS region; ``None`` uses boto3's chain (``AWS_REGION``, config).
            endpoint_url: S3-compatible endpoint, e.g. ``http://minio:9000``.
            connect_timeout: seconds to establish a connection.
            read_timeout: seconds to wait for a response.
            verify_etag: compare the returned ETag with the MD5 of the body.
                Turn off only for buckets whose ETag is not the MD5 (SSE-KMS
                is detected and skipped automatically).

        Raises:
            ValueError: if ``bucket`` is empty or ``prefix`` is invalid.
        """
        if not bucket:
            raise ValueError("bucket: must not be empty")
        self.bucket = bucket
        self.prefix = validate_prefix(prefix)
        self.region = region
        self.endpoint_url = endpoint_url
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.verify_etag = verify_etag
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        """Show the target, never credentials."""
        return (
            f"S3Sink(bucket={self.bucket!r}, prefix={self.prefix!r}, region={self.region!r}, "
            f"endpoint_url={self._shown_endpoint!r})"
        )

    def _get_client(self) -> S3Client:
        with self._lock:
            if self._client is None:
                # Lazy: importing boto3 costs ~100 ms and tens of MB; only pay when used.
                import boto3
                from botocore.config import Config

                config = Config(
                    retries={"max_attempts": 1, "mode": "standard"},
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                    # Content-MD5 is our integrity check; the newer default CRC
                    # trailers break some S3-compatible servers.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                session = boto3.session.Session()
                self._client = session.client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                )
            return self._client

    @property
    def _shown_endpoint(self) -> str | None:
        """The endpoint URL without user-info or query string, for messages."""
        return None if self.endpoint_url is None else redact_url(self.endpoint_url)

    def _hint(self, template: str, key: str) -> str:
        return template.format(
            bucket=self.bucket,
            key=key,
            prefix=self.prefix,
            region=self.region or "(default)",
            endpoint=self._shown_endpoint or "AWS S3",
        )

    def put(self, key: str, body: bytes, md5_b64: str) -> None:
        """Put ``body`` under ``key`` with ``Content-MD5`` and check the ETag.

        Raises:
            PermanentSinkError: configuration or credential problem, with a hint.
            TransientSinkError: network, timeout, throttling, 5xx.
        """
        from botocore import exceptions as bce

        where = f"s3://{self.bucket}/{key}"
        try:
            client = self._get_client()
            response = client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentMD5=md5_b64,
                ContentType="application/x-ndjson",
                ContentEncoding="gzip",
            )
        except bce.ClientError as exc:
            raise self._classify_client_error(exc, key, where) from exc
        except (bce.NoCredentialsError, bce.PartialCredentialsError) as exc:
            raise PermanentSinkError(
                f"put {where}: no usable AWS credentials ({type(exc).__name__})",
                hint=_CREDENTIALS_HINT,
            ) from exc
        except (bce.NoRegionError, bce.InvalidRegionError) as exc:
            raise PermanentSinkError(
                f"put {where}: {exc}", hint="set storage.region (e.g. eu-west-1)"
            ) from exc
        except (
            bce.ParamValidationError,
            bce.ProfileNotFound,
            bce.UnknownEndpointError,
            bce.InvalidConfigError,
        ) as exc:
            raise PermanentSinkError(
                f"put {where}: {exc}", hint="check storage.bucket/region/endpoint_url"
            ) from exc
        except ValueError as exc:
            # botocore raises plain ValueError for a malformed endpoint_url.
            raise PermanentSinkError(
                f"put {where}: {exc}", hint="check storage.endpoint_url"
            ) from exc
        except bce.SSLError as exc:
            # A clock still at 1970 after boot makes every certificate "not yet valid";
            # that fixes itself, so retry rather than give up.
            raise TransientSinkError(
                f"put {where}: TLS error: {exc}",
                hint="check the device clock and the endpoint's certificate",
            ) from exc
        except (bce.ConnectionError, bce.HTTPClientError) as exc:
            raise TransientSinkError(f"put {where}: {type(exc).__name__}: {exc}") from exc
        except bce.BotoCoreError as exc:
            raise TransientSinkError(f"put {where}: {type(exc).__name__}: {exc}") from exc

        if self.verify_etag and response.get("ServerSideEncryption") not in (
            "aws:kms",
            "aws:kms:dsse",
        ):
            etag = str(response.get("ETag", "")).strip('"').lower()
            expected = md5_hex_from_b64(md5_b64)
            if etag != expected:
                raise PermanentSinkError(
                    f"put {where}: the endpoint returned ETag {etag!r}, expected MD5 {expected}",
                    hint="if this bucket's ETags are not MD5 digests, disable ETag verification",
                )

    def _classify_client_error(
        self, exc: Any, key: str, where: str
    ) -> PermanentSinkError | TransientSinkError:
        response = getattr(exc, "response", {}) or {}
        code = str(response.get("Error", {}).get("Code", "") or "")
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"put {where}: {code or 'error'} (HTTP {status})"
        template = _PERMANENT_CODES.get(code)
        if template is not None:
            return PermanentSinkError(message, hint=self._hint(template, key))
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429) or status == 0:
            return TransientSinkError(message)
        if status == 404:
            return PermanentSinkError(
                message, hint=self._hint(_PERMANENT_CODES["NoSuchBucket"], key)
            )
        if status == 403:
            return PermanentSinkError(
                message, hint=self._hint(_PERMANENT_CODES["AccessDenied"], key)
            )
        # Any other 4xx: the request itself is wrong; retrying fast will not change that.
        return PermanentSinkError(
            message, hint="the endpoint rejected the request: check storage settings"
        )

    def close(self) -> None:
        """Close the HTTP connection pool, if a client was created."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing must never take the uploader down
                logger.debug("closing the S3 client failed: %s", exc)
