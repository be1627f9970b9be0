"""Deployment settings, read from the environment and from ``$INSITU_HOME/settings.env``.

Secrets fail closed: a deployment that is not a demo refuses to start while any secret still
has its built-in default value. ``insitu init`` writes random secrets into settings.env.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "insecure-default-secret-change-me"  # noqa: S105 - the sentinel we refuse
SETTINGS_FILE_NAME = "settings.env"


class SettingsError(RuntimeError):
    """The deployment's settings cannot work; the message names the setting to fix."""


class InsecureSettingsError(SettingsError):
    """Raised when a non-demo deployment would run with a default secret."""


def _home_from_env() -> Path:
    return Path(os.environ.get("INSITU_HOME", "./insitu-home")).resolve()


class Settings(BaseSettings):
    """All deployment settings. Environment variables are prefixed ``INSITU_``."""

    model_config = SettingsConfigDict(env_prefix="INSITU_", extra="ignore")

    home: Path = Field(default_factory=_home_from_env)
    database_url: str = ""
    """SQLAlchemy URL. Empty means the embedded SQLite database in ``home``."""
    store_url: str = ""
    """``file:///path`` (default: ``home``/blobs) or ``s3://bucket?endpoint=http://host:port``."""
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    """Deployment secret: keys the pseudonym HMACs and date shifts. Never change it after ingest."""
    demo: bool = False
    site: str = "SITE"
    """Default site name for ingests that do not give ``--site``."""
    deid_options: str = "rtnLongModifDates"
    """Comma-separated de-identification options applied when an ingest gives none."""
    deid_allow_list_extra: Path | None = None
    """A TOML file of extra allow-list entries (same format as the shipped
    ``ingest/deid/data/allow-list.toml``); its fingerprint is recorded in every instance."""
    ocr: Literal["tesseract", "off"] = "tesseract"
    """Burned-in text check on the pixels of risky modalities (US, SC, XA, RF, ES, CR, DX,
    OT, ...) whose header says Burned In Annotation NO; ``off`` trusts such headers."""
    quarantine_retention_days: int = Field(default=0, ge=0)
    """Undecided quarantined instances older than this are deleted (0: kept until a steward
    decides); applied when an ingest starts and by ``insitu quarantine expire``."""
    allowed_calling_ae_titles: str = ""
    """Comma-separated calling AE titles the DICOM listener accepts (empty: refuse all)."""
    upload_max_bytes: int = 20 * 1024**3
    ingest_workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    tmp_dir: Path | None = None
    """Where uploads are spooled while they are de-identified; kept outside ``home``."""
    oidc_issuer: str = ""
    """OpenID provider (e.g. a Keycloak realm URL); empty turns OIDC sign-in off."""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_scopes: str = "openid profile"
    oidc_roles_claim: str = "realm_access.roles"
    """Dotted path of the claim listing the user's roles (Keycloak realm roles by default;
    client roles: ``resource_access.<client>.roles``)."""
    oidc_groups_claim: str = "groups"
    oidc_role_map: str = ""
    """``idp-role=insitu-role`` pairs, comma-separated; unmapped claim values that are insitu
    role names count as themselves."""
    oidc_default_role: str = ""
    """Role for users whose token names no insitu role; empty refuses them."""
    login_attempts_per_minute: int = 10
    """Password logins accepted per client address and minute (then 429)."""
    public_url: str = "http://127.0.0.1:8000"
    """Where users reach this deployment; landing pages and local PIDs are built on it."""
    publisher: str = ""
    """The organisation named as publisher in citations and metadata (default: the site)."""
    contact_email: str = ""
    """Contact point of published datasets (DCAT-AP); empty: none is stated."""
    pid_minter: str = "local"
    """``local`` (identifiers resolved by this deployment at /pid/...) or ``datacite``."""
    datacite_api_url: str = "https://api.datacite.org"
    datacite_prefix: str = ""
    """The DOI prefix DataCite gave this repository, e.g. ``10.12345``."""
    datacite_repository_id: str = ""
    datacite_password: SecretStr = SecretStr("")
    views_root: Path | None = None
    """Where dataset views are built (default: ``home``/views). With the local blob store it
    must be on the blob store's filesystem: views are hard links, never copies."""
    tools_root: Path | None = None
    """Where tool environments are built, one folder per tool version (default:
    ``home``/tools); jobs mount one read-only at /opt/tool."""
    tool_wheel_dir: Path | None = None
    """A local folder of wheels that tool environments install from (no network needed)."""
    tool_index_url: str = ""
    """A package index for tool environments (when no wheel folder is set); the build then
    gets network access, and nothing else."""
    tool_python: str = "/usr/bin/python3"
    """The interpreter tool environments (and jobs) run: the host's, mounted read-only."""
    jobs_root: Path | None = None
    """Job folders: spec, log, end state and /results (default: ``home``/jobs)."""
    homes_root: Path | None = None
    """Users' persistent homes, mounted at /home/<user> in jobs (default: ``home``/homes)."""
    job_user: str = "insitu-job"
    """The unprivileged host user jobs' sandboxes start as when insitu runs as root."""
    slurm_conf: str = ""
    """The Slurm cluster's slurm.conf; set, flavors with ``backend = slurm`` run through it."""
    kubernetes_kubeconfig: str = ""
    """A kubeconfig; set, flavors with ``backend = kubernetes`` run as Kubernetes Jobs."""
    kubernetes_namespace: str = "insitu"
    kubernetes_bundle_image: str = ""
    """The base image bundles run in on Kubernetes, pinned by digest (…@sha256:…)."""
    kubernetes_queue: str = ""
    """A Kueue LocalQueue to label jobs with; empty: none."""
    local_job_slots: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    """Jobs the local backend runs at once; the rest wait in the queue."""
    job_max_concurrent: int = 4
    """Jobs a user may have queued or running at once."""
    job_gpu_hours_per_week: float = 40.0
    project_max_concurrent: int = 16
    """Jobs a project may have queued or running at once (jobs submitted with --project)."""
    project_gpu_hours_per_week: float = 200.0
    releases_root: Path | None = None
    """Stored copies of job results asking to leave (default: ``home``/releases)."""
    release_max_file_mb: int = 200
    """Largest result file (or file inside an archive) that may leave, in MB."""
    release_max_request_mb: int = 1024
    """Largest release request (all its files, and archives unpacked), in MB."""
    release_max_files: int = 10_000
    """Files and folders one job may leave in /results (more: the request is refused)."""
    release_max_identifiers: int = 10
    """Dataset pseudonyms and UIDs one result file may name before it is refused."""
    release_extra_checks: str = ""
    """A deployment's own release checks: ``module:attribute`` entries, comma-separated."""
    release_checker_memory_mb: int = 4096
    """Memory the release checker process may use (it opens hostile files)."""
    release_checker_timeout_s: int = 900
    viewer_frames_per_hour: int = 3000
    """Rendered frames and thumbnails one user may get per hour (the viewer and WADO-RS)."""
    ledger_origin: str = ""
    """The ledger's name in checkpoints (a schema-less URL).

    Default ``<site>.insitu.local/ledger``."""

    def resolved_ledger_origin(self) -> str:
        """The checkpoint origin line and log key name."""
        origin = self.ledger_origin or f"{self.site.lower()}.insitu.local/ledger"
        if not origin or any(c.isspace() or c == "+" for c in origin):
            raise ValueError(
                f"INSITU_LEDGER_ORIGIN {origin!r} must be non-empty, without spaces or '+'"
            )
        return origin

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside ``home``."""
        return self.database_url or f"sqlite:///{self.home / 'insitu.db'}"

    @cached_property
    def resolved_store_url(self) -> str:
        """The blob store URL, defaulting to a folder inside ``home``."""
        return self.store_url or f"file://{self.home / 'blobs'}"

    @property
    def resolved_views_root(self) -> Path:
        """The folder that holds one read-only view per released dataset version."""
        return self.views_root or self.home / "views"

    @property
    def resolved_tools_root(self) -> Path:
        """The folder of built tool environments."""
        return self.tools_root or self.home / "tools"

    @property
    def resolved_jobs_root(self) -> Path:
        """The folder of job folders."""
        return self.jobs_root or self.home / "jobs"

    @property
    def resolved_releases_root(self) -> Path:
        """The folder of release requests' stored files."""
        return self.releases_root or self.home / "releases"

    @property
    def resolved_homes_root(self) -> Path:
        """The folder of users' job homes."""
        return self.homes_root or self.home / "homes"

    @property
    def resolved_publisher(self) -> str:
        """The publisher named in citations and metadata."""
        return self.publisher or self.site

    def secret_bytes(self) -> bytes:
        """The deployment secret as bytes (the HMAC key for pseudonyms)."""
        return self.secret_key.get_secret_value().encode()

    def check_secrets(self) -> None:
        """Refuse to run a real deployment with default secrets."""
        if self.demo:
            return
        if self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY:
            raise InsecureSettingsError(
                "INSITU_SECRET_KEY still has its built-in default value. Run `insitu init` "
                f"(it writes a random secret to {self.home / SETTINGS_FILE_NAME}) or set "
                "INSITU_SECRET_KEY; `insitu demo` is the only mode that accepts the default."
            )
        if len(self.secret_key.get_secret_value()) < 32:
            raise InsecureSettingsError(
                "INSITU_SECRET_KEY is shorter than 32 characters; use a random value "
                "such as the one `insitu init` writes."
            )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, then ``$INSITU_HOME/settings.env``, then overrides."""
    home = Path(str(overrides.get("home") or _home_from_env())).resolve()
    env_file = home / SETTINGS_FILE_NAME
    return Settings(_env_file=env_file if env_file.exists() else None, **overrides)


def write_settings_file(home: Path) -> Path:
    """Create ``settings.env`` with a random secret, unless it exists (never overwrite)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / SETTINGS_FILE_NAME
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "# Written by `insitu init`. Keep it secret and back it up: pseudonyms depend on it.\n"
            f"INSITU_SECRET_KEY={secrets.token_urlsafe(48)}\n"
        )
        handle.flush()
        os.fsync(handle.fileno())
    tmp.rename(path)
    return path
