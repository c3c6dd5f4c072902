"""The configuration file: YAML with ``${VAR}`` interpolation, validated by pydantic.

A configuration error stops start-up with one line naming the offending path
(``organisations[0].plugins[1].mcp: ...``), never a traceback: callers catch
:class:`ConfigError` and print ``str(err)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runtime.guardrails.config import GuardrailConfig
from runtime.prompt_template import slots
from runtime.providers.registry import provider_kind

DEFAULT_DATABASE_URL = "sqlite:///plugway.db"
DEMO_MODEL = "demo"
DEFAULT_ORGANISATION = "default"


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# What a front door does with a request field the model's upstream cannot receive:
# drop it and name it in x-plugway-ignored-params, or refuse the request naming every one.
UnsupportedParams = Literal["ignore", "refuse"]
# The OpenAI API a provider (or one model) is called with: chat completions, or the Responses
# API (a kind that has it registers it: runtime.providers.registry, ``other_apis``).
UpstreamApi = Literal["chat", "responses"]


def _kind_speaks(kind: str, api: UpstreamApi | None, where: str) -> None:
    if api is not None and api not in provider_kind(kind).apis:
        raise ValueError(f"{where}: provider kind '{kind}' cannot be called with api '{api}' (it takes: {', '.join(sorted(provider_kind(kind).apis))})")


class ProviderConfig(_Strict):
    id: str
    # A registered provider kind (runtime.providers.registry): openai, anthropic, demo, function, ...
    kind: str
    api: UpstreamApi = "chat"
    base_url: str | None = None
    api_key: str | None = None
    # A non-streamed call ends within timeout_s, whatever the upstream does; a stream's headers
    # and every gap between two of its reads too.
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # A whole stream ends within this.
    max_stream_s: float = Field(default=900.0, gt=0)
    # Largest non-streamed body read from the provider, and largest server-sent event of a stream.
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_retries: int = 2
    # Circuit breaker: consecutive failures that open it, and how long it stays open.
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    headers: dict[str, str] = Field(default_factory=dict)
    # Most tools one request may offer the model (default: the provider kind's limit, 128).
    max_tools: int | None = Field(default=None, ge=1)
    # Most connections open to this provider at once, per gateway process (a stream holds one
    # for its whole length); requests beyond it wait for a free one.
    max_connections: int = Field(default=1024, ge=1)

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        provider_kind(kind)  # raises, naming the kinds that exist
        return kind

    @model_validator(mode="after")
    def _needs_base_url(self) -> ProviderConfig:
        if provider_kind(self.kind).needs_base_url and not self.base_url:
            raise ValueError(f"provider kind '{self.kind}' needs a base_url")
        _kind_speaks(self.kind, self.api if self.api != "chat" else None, f"provider '{self.id}'")
        return self


class Price(_Strict):
    # USD per million tokens: a negative price would credit the organisation's budget (and fail
    # the cost metric), an infinite one would make every request unaffordable.
    input_per_mtok: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    output_per_mtok: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class ModelConfig(_Strict):
    id: str
    provider: str
    upstream_model: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    price: Price | None = None
    max_tokens_default: int | None = None
    # Serves POST /v1/embeddings (its provider kind must have embeddings: openai, demo);
    # GET /v1/models lists it with "embeddings": true.
    embeddings: bool = False
    # Overrides the provider's api for this model.
    api: UpstreamApi | None = None
    # ignore | refuse, for requests to this model (default: the organisation's, else the global one).
    unsupported_params: UnsupportedParams | None = None
    # Overrides the vision of its provider kind's profile (image parts reach it); None = the kind's.
    vision: bool | None = None
    # Overrides the audio of its provider kind's profile (sound parts reach it: an audio model
    # such as gpt-4o-audio-preview); None = the kind's (no kind hears by default).
    audio: bool | None = None

    @property
    def upstream(self) -> str:
        return self.upstream_model or self.id


class McpAuthConfig(_Strict):
    """How plugway obtains a bearer token for an HTTP MCP server (see the README's "Upstream servers that need OAuth")."""

    # oauth: authorization code with PKCE, plugway as the OAuth client, authorized in the
    # console (or, per_user, by each end user through a link); client_credentials: a
    # machine token plugway fetches itself.
    type: Literal["oauth", "client_credentials"]
    # oauth only: each end user authorizes with their own account and the server's tools
    # run with that user's token (default: one authorization for the whole organisation).
    per_user: bool = False
    # Scopes asked for (default: the server's advertised scopes_supported, if any).
    scopes: list[str] | None = None
    # A client registered with the authorization server; without one plugway registers
    # itself (dynamic client registration) where the server allows it.
    client_id: str | None = None
    client_secret: str | None = None
    # Endpoints given explicitly instead of discovered from the server's protected
    # resource metadata (RFC 9728) and its authorization server's metadata (RFC 8414).
    authorization_url: str | None = None
    token_url: str | None = None
    # The resource indicator (RFC 8707) sent with every authorization and token request
    # (default: the resource the server's metadata names, else its URL).
    resource: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> McpAuthConfig:
        if self.type == "client_credentials":
            if not (self.client_id and self.client_secret):
                raise ValueError("client_credentials needs 'client_id' and 'client_secret'")
            if self.per_user:
                raise ValueError("'per_user' needs type 'oauth' (client credentials act as the gateway, not a user)")
            if self.authorization_url:
                raise ValueError("'authorization_url' is for type 'oauth'")
        if self.client_secret and not self.client_id:
            raise ValueError("'client_secret' needs 'client_id'")
        for name in ("authorization_url", "token_url", "resource"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("http://", "https://")):
                raise ValueError(f"'{name}' must be an http(s) URL")
        return self


class McpConfig(_Strict):
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # Seconds to start or reach the server, complete the handshake and list its tools
    # (default 10); a server slower than that is retried in the background.
    connect_timeout_s: float | None = Field(default=None, gt=0)
    # Seconds to wait for an answer to the 2026 protocol's discovery probe before falling
    # back to the older `initialize` handshake (default 3): some servers ignore it.
    probe_timeout_s: float | None = Field(default=None, gt=0)
    # Roots the server may ask for (MCP `roots/list`): absolute paths or URIs.
    roots: list[str] | None = None
    # The model that answers the server's sampling requests for calls made outside a
    # request's loop (the /mcp front door); inside a loop the request's own model answers.
    sampling_model: str | None = None
    # One connection (one process, one HTTP session) for every organisation that configures
    # this server, instead of one per organisation: only for servers that keep no state
    # between calls, since whatever state they keep is then common to those organisations.
    shared: bool = False
    # Seconds between pings of an HTTP server, so that a server that died is reported down
    # (and its tools withdrawn) before a call fails on it (default 30).
    ping_interval_s: float | None = Field(default=None, gt=0)
    # How plugway authenticates to an HTTP server beyond static `headers`: OAuth (authorized
    # in the console once per organisation, or per end user) or client credentials.
    auth: McpAuthConfig | None = None

    @model_validator(mode="after")
    def _exactly_one_transport(self) -> McpConfig:
        if bool(self.command) == bool(self.url):
            raise ValueError("give exactly one of 'command' or 'url'")
        if self.auth is not None and self.command:
            raise ValueError("'auth' is for servers reached over HTTP ('url'); a stdio server gets its credentials in 'env'")
        if self.auth is not None and self.auth.type == "oauth" and self.shared:
            raise ValueError("an OAuth-authorized server acts for one organisation (or user): it cannot be 'shared'")
        return self

    @field_validator("roots")
    @classmethod
    def _roots_are_files(cls, roots: list[str] | None) -> list[str] | None:
        for root in roots or ():
            if not (root.startswith("file:///") or os.path.isabs(root)):
                raise ValueError(f"root '{root}' is neither an absolute path nor a file:/// URI")
        return roots


class PluginRef(_Strict):
    id: str
    config: dict[str, Any] = Field(default_factory=dict)
    mcp: McpConfig | None = None
    # Narrow the tools offered, by the tool's own name (an MCP server's name for its tool).
    allowed_tools: list[str] | None = None
    exclude_tools: list[str] = Field(default_factory=list)
    # Tools a person must approve before they run: "destructive" ones (MCP annotations,
    # read as the spec defaults them: destructive unless readOnlyHint or destructiveHint
    # false), "always" every tool, "never" none. Front doors that cannot ask (all but
    # /v1/responses) are not offered these tools at all.
    require_approval: Literal["never", "destructive", "always"] = "never"


class SessionsConfig(_Strict):
    enabled: bool = False
    # History kept for a session, oldest dropped first (the system prompt is always kept).
    max_messages: int = Field(default=40, ge=2)
    max_chars: int = Field(default=40000, ge=100)
    ttl_hours: float = Field(default=72.0, gt=0)


SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"


OrchestrationMode = Literal["classic", "code", "auto"]
ORCHESTRATION_MODES: tuple[str, ...] = ("classic", "code", "auto")


class ModeOverride(_Strict):
    """An organisation's or an endpoint's choice of orchestration mode (None: the level above decides)."""

    mode: OrchestrationMode | None = None


class EndpointConfig(_Strict):
    """A named assistant: model, prompt, plugins, sessions, limits, schemas and guardrails pinned."""

    slug: str = Field(pattern=SLUG)
    model: str
    description: str | None = None
    # {{variable}} slots are filled from the request's `variables`.
    system_prompt: str | None = None
    # The organisation's plugins this endpoint may run; None: all of them, []: no tools.
    plugins: list[str] | None = None
    stream: bool = True
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    max_tokens_per_request: int | None = Field(default=None, ge=1)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    guardrails: list[str] = Field(default_factory=list)
    active: bool = True
    orchestration: ModeOverride = Field(default_factory=ModeOverride)

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return schema


class RequestLogConfig(_Strict):
    # Keep the conversation sent to the model and its answer (after guardrail redaction).
    capture_bodies: bool = False
    # The organisation's request log entries (and their bodies) are deleted after this many days.
    retention_days: int = Field(default=14, ge=1, le=3650)


class OrganisationConfig(_Strict):
    id: str
    models: list[str] | None = None
    plugins: list[PluginRef] = Field(default_factory=list)
    monthly_budget_usd: float | None = None
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    guardrails: list[GuardrailConfig] = Field(default_factory=list)
    # The guardrails in force on /v1/chat/completions, /v1/responses and /v1/messages.
    guardrails_default: list[str] = Field(default_factory=list)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    orchestration: ModeOverride = Field(default_factory=ModeOverride)
    # Names or glob patterns this organisation's clients may send, mapped to a model id;
    # they win over the global model_aliases.
    model_aliases: dict[str, str] = Field(default_factory=dict)
    # ignore | refuse (default: the global setting); a model's own setting wins over this.
    unsupported_params: UnsupportedParams | None = None

    def endpoint(self, slug: str) -> EndpointConfig | None:
        for endpoint in self.endpoints:
            if endpoint.slug == slug:
                return endpoint
        return None

    @property
    def plugin_ids(self) -> list[str]:
        return [p.id for p in self.plugins]

    def plugin(self, plugin_id: str) -> PluginRef | None:
        for ref in self.plugins:
            if ref.id == plugin_id:
                return ref
        return None


class SamplingConfig(_Strict):
    # What one tool call may ask of the model through MCP sampling.
    max_calls_per_tool_call: int = Field(default=5, ge=0)
    max_tokens_per_tool_call: int = Field(default=8000, ge=1)


class CodeModeConfig(_Strict):
    """The sandbox a code-mode script runs in (Monty), and when ``auto`` picks code mode."""

    # Seconds the script may compute, and as many it may sleep; waiting for its tools does not count.
    timeout_s: float = Field(default=10.0, gt=0)
    max_memory_mb: int = Field(default=64, ge=1)
    max_recursion_depth: int = Field(default=200, ge=10)
    # Tool calls one script may make (each one a call through the same path as a classic call).
    max_tool_calls: int = Field(default=50, ge=1)
    # `auto` picks code mode from this many eligible tools on (or when the catalogue needs tool search).
    auto_min_tools: int = Field(default=10, ge=1)
    # Worker processes running scripts at once (more wait for a free one).
    workers: int = Field(default=2, ge=1)


class OrchestrationConfig(_Strict):
    # classic: one model round per tool step; code: the model writes a script over the tools.
    mode: OrchestrationMode = "classic"
    code_mode: CodeModeConfig = Field(default_factory=CodeModeConfig)
    max_tool_rounds: int = Field(default=8, ge=1, le=64)
    tool_timeout_s: float = Field(default=30.0, gt=0)
    # A tool that reports progress gets tool_timeout_s more after each report, up to this in all.
    tool_max_s: float = Field(default=300.0, gt=0)
    # Above this many prompt tokens of tool definitions (about 4 characters a token), or above
    # the provider's tool limit, the model gets a tool-search tool instead of the whole catalogue.
    tool_prompt_budget_tokens: int | None = Field(default=30000, ge=100)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    max_tool_result_chars: int = Field(default=20000, ge=100)
    # SSE comment keep-alives while tools run (and while waiting upstream).
    keepalive_s: float = Field(default=5.0, gt=0)


class ResponsesConfig(_Strict):
    # Stored responses (previous_response_id, GET /v1/responses/{id}) are kept this long.
    retention_days: float | None = Field(default=30.0, gt=0)


class RoutingConfig(_Strict):
    # Upstream attempts for one model call, across retries and fallbacks: failures never
    # multiply beyond this, however many retries and fallbacks are configured.
    max_attempts_per_call: int = Field(default=4, ge=1, le=20)


class LimitsConfig(_Strict):
    # Redis must answer within this, or the request is refused (fail closed).
    redis_timeout_s: float = Field(default=0.25, gt=0)
    # Output a request that names no max_tokens may produce, as reserved against daily-token
    # caps and budgets while it runs (see runtime/limits/reservation.py).
    default_reserved_output_tokens: int = Field(default=4096, ge=1)
    # A reservation never settled (its process died) is released after this.
    reservation_ttl_s: float = Field(default=900.0, gt=0)


class UsageConfig(_Strict):
    # Usage records are batched in memory and written at most this often.
    flush_interval_s: float = Field(default=0.5, gt=0)
    max_batch: int = Field(default=500, ge=1)
    # Where rows the database refuses (or that are unwritten at shutdown) are saved for
    # `plugway usage replay`; default: beside an SQLite file, else the working directory.
    spill_file: str | None = None


# The endpoint variables every WhatsApp message brings (see WhatsAppAppConfig.variables).
WHATSAPP_VARIABLES = ("contact_name", "contact_phone")


class WhatsAppAppConfig(_Strict):
    id: str
    organisation: str
    phone_number_id: str
    access_token: str
    app_secret: str
    verify_token: str
    # Either an endpoint of the organisation (model, prompt, plugins, guardrails and the
    # conversation memory as its sessions), or model / system_prompt / enabled_plugin_ids.
    endpoint: str | None = None
    # Values for the endpoint's {{slots}}, next to the ones every message brings:
    # contact_name (the sender's WhatsApp profile name, else the number) and contact_phone.
    variables: dict[str, str] = Field(default_factory=dict)
    # For an endpoint with an output_schema: the string field of its JSON answer sent to the
    # customer (without it, the JSON text itself is sent).
    reply_field: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    enabled_plugin_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _endpoint_or_model(self) -> WhatsAppAppConfig:
        if (self.endpoint is None) == (self.model is None):
            raise ValueError("give exactly one of 'endpoint' or 'model'")
        if self.variables and self.endpoint is None:
            raise ValueError("'variables' fill an endpoint's system prompt: name an 'endpoint'")
        if self.reply_field is not None and self.endpoint is None:
            raise ValueError("'reply_field' picks a field of an endpoint's JSON answer: name an 'endpoint'")
        return self


class WhatsAppConfig(_Strict):
    graph_api_base: str = "https://graph.facebook.com/v23.0"
    apps: list[WhatsAppAppConfig] = Field(default_factory=list)
    history_messages: int = Field(default=20, ge=0)
    history_chars: int = Field(default=12000, ge=0)
    max_message_age_s: float = Field(default=3600.0, gt=0)
    max_send_attempts: int = Field(default=5, ge=1)
    lease_s: float = Field(default=120.0, gt=0)
    worker_concurrency: int = Field(default=8, ge=1)
    poll_interval_s: float = Field(default=0.5, gt=0)


class MetricsConfig(_Strict):
    # GET /metrics in Prometheus' text format.
    enabled: bool = True
    # When set, /metrics answers only `Authorization: Bearer <token>` (401 otherwise).
    token: str | None = None
    # host:port of a separate listener serving only /metrics (the main port then answers 404).
    # Neither token nor listen: the main port serves /metrics to loopback peers only.
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{value}' is not host:port (such as 127.0.0.1:9464)")
        return value


class TracingConfig(_Strict):
    # OpenTelemetry traces; off unless enabled.
    enabled: bool = False
    # otlp: OTLP over HTTP/protobuf to `endpoint`; console: spans on stdout; none: no exporter
    # (a tracer provider installed by the host process, e.g. opentelemetry-instrument, still gets them).
    exporter: Literal["otlp", "console", "none"] = "otlp"
    # The collector's OTLP/HTTP traces URL; a bare http://host:4318 gets /v1/traces added.
    # Default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318.
    endpoint: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    service_name: str = "plugway"
    # Fraction of new traces recorded (an incoming traceparent's sampled flag is followed).
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # Put prompts, answers and tool arguments/results on spans (GenAI opt-in attributes).
    capture_content: bool = False


class LoggingConfig(_Strict):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # One line per request (request id, organisation, key id, model, provider, status, rounds,
    # tokens, latency); default: on with the json format, off with text.
    requests: bool | None = None
    # Put message content (the request's messages, the answer) in the per-request line. Never
    # in production: logs then hold whatever users and tools wrote.
    debug_content: bool = False


class OAuthServerConfig(_Strict):
    # plugway as the OAuth authorization server of /mcp (MCP authorization); off: gateway keys only.
    enabled: bool = True
    # The gateway's public address (https://gateway.example.com): the issuer, and the /mcp resource
    # tokens are bound to. Default: taken from each request's scheme and Host header.
    public_url: str | None = None
    access_token_ttl_s: int = Field(default=3600, ge=60)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    # How long an authorization request waits for consent in the console.
    consent_ttl_s: int = Field(default=600, ge=30)
    # Clients may register themselves (RFC 7591); the MCP 2026-07-28 revision keeps it as a fallback.
    dynamic_client_registration: bool = True
    # A client_id may be an https URL of a Client ID Metadata Document, fetched on demand.
    client_metadata_documents: bool = True
    # Fetch client metadata documents from loopback and private addresses too (tests only: an
    # address that is not public is otherwise refused, so a client_id cannot probe the network).
    client_metadata_private_hosts: bool = False
    # Requests a minute one client address may make to /oauth/register and /oauth/authorize (which
    # anyone may call, and which store a client or a pending consent); counted by the rate limiter,
    # so shared by every process on Redis. None: no limit.
    requests_per_minute_per_ip: int | None = Field(default=60, ge=1)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"'{value}' is not a base URL such as https://gateway.example.com")
        return value.rstrip("/")


class Settings(_Strict):
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    providers: list[ProviderConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)
    organisations: list[OrganisationConfig] = Field(default_factory=list)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    whatsapp: WhatsAppConfig = Field(default_factory=WhatsAppConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    oauth_server: OAuthServerConfig = Field(default_factory=OAuthServerConfig)
    # Names or glob patterns (claude-opus-*, gpt-5*) a client may send, mapped to a model id.
    model_aliases: dict[str, str] = Field(default_factory=dict)
    # A request field the model's upstream cannot receive: ignore (drop it and name it in
    # x-plugway-ignored-params) or refuse (400 naming every such field).
    unsupported_params: UnsupportedParams = "ignore"
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    # A request body not fully arrived this long after the request began: 408, connection closed;
    # request headers not complete this long after the connection opened: connection closed.
    body_read_timeout_s: float = Field(default=30.0, gt=0)
    # Peers (addresses or networks) whose X-Forwarded-For is believed; none by default.
    trusted_proxies: list[str] = Field(default_factory=list)
    # How long a looked-up key is trusted before the database is asked again (revocation delay).
    key_cache_ttl_s: float = Field(default=5.0, ge=0)
    # Encrypts stored OAuth tokens of upstream MCP servers (a long random string; the key
    # is derived from it with HKDF); needed only once an MCP server has `auth: {type: oauth}`.
    secrets_key: str | None = Field(default=None, repr=False)
    # Set by the loader: True when no configuration file was given.
    embedded_default: bool = False

    @field_validator("secrets_key")
    @classmethod
    def _secrets_key(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty: give a long random string (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        from runtime.storage.urls import check_database_url

        return check_database_url(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, proxies: list[str]) -> list[str]:
        import ipaddress

        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"'{proxy}' is not an IP address or network (such as 10.0.0.0/8)") from None
        return proxies

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        from runtime.storage.urls import check_redis_url

        return None if value is None else check_redis_url(value)

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        provider_ids = {p.id for p in self.providers}
        model_ids = {m.id for m in self.models}
        org_ids = {o.id for o in self.organisations}
        for i, model in enumerate(self.models):
            if model.provider not in provider_ids:
                raise _PathError(f"models[{i}].provider", f"unknown provider '{model.provider}'")
            if model.api is not None:
                kind = next(p.kind for p in self.providers if p.id == model.provider)
                if model.api not in provider_kind(kind).apis:
                    raise _PathError(f"models[{i}].api", f"provider kind '{kind}' cannot be called with api '{model.api}'")
            for j, fallback in enumerate(model.fallbacks):
                if fallback not in model_ids:
                    raise _PathError(f"models[{i}].fallbacks[{j}]", f"unknown model '{fallback}'")
        for name, target in self.model_aliases.items():
            if target not in model_ids:
                raise _PathError(f"model_aliases.{name}", f"unknown model '{target}'")
        for i, org in enumerate(self.organisations):
            for name, target in org.model_aliases.items():
                if target not in model_ids:
                    raise _PathError(f"organisations[{i}].model_aliases.{name}", f"unknown model '{target}'")
                if org.models is not None and target not in org.models:
                    raise _PathError(
                        f"organisations[{i}].model_aliases.{name}", f"model '{target}' is not allowed for organisation '{org.id}'"
                    )
            for j, allowed in enumerate(org.models or []):
                if allowed not in model_ids:
                    raise _PathError(f"organisations[{i}].models[{j}]", f"unknown model '{allowed}'")
            guardrail_keys: set[str] = set()
            for j, guardrail in enumerate(org.guardrails):
                if guardrail.key in guardrail_keys:
                    raise _PathError(f"organisations[{i}].guardrails[{j}].key", f"duplicate guardrail '{guardrail.key}'")
                guardrail_keys.add(guardrail.key)
            for j, key in enumerate(org.guardrails_default):
                if key not in guardrail_keys:
                    raise _PathError(f"organisations[{i}].guardrails_default[{j}]", f"no guardrail '{key}' in this organisation")
            slugs: set[str] = set()
            for j, endpoint in enumerate(org.endpoints):
                where = f"organisations[{i}].endpoints[{j}]"
                if endpoint.slug in slugs:
                    raise _PathError(f"{where}.slug", f"duplicate endpoint '{endpoint.slug}'")
                slugs.add(endpoint.slug)
                for path, message in endpoint_problems(org, endpoint, model_ids):
                    raise _PathError(f"{where}.{path}", message)
            seen: set[str] = set()
            for j, plugin in enumerate(org.plugins):
                if plugin.id in seen:
                    raise _PathError(
                        f"organisations[{i}].plugins[{j}].id", f"duplicate plugin id '{plugin.id}'"
                    )
                seen.add(plugin.id)
                auth = plugin.mcp.auth if plugin.mcp is not None else None
                if auth is not None and auth.type == "oauth" and self.secrets_key is None:
                    raise _PathError(
                        f"organisations[{i}].plugins[{j}].mcp.auth",
                        "OAuth tokens are stored encrypted: set 'secrets_key' at the top of the configuration",
                    )
                if auth is not None and auth.per_user and self.oauth_server.public_url is None:
                    raise _PathError(
                        f"organisations[{i}].plugins[{j}].mcp.auth.per_user",
                        "end users authorize through a link to the gateway: set 'oauth_server.public_url' (its public address)",
                    )
                sampling_model = plugin.mcp.sampling_model if plugin.mcp is not None else None
                if sampling_model is not None and (
                    sampling_model not in model_ids or (org.models is not None and sampling_model not in org.models)
                ):
                    raise _PathError(
                        f"organisations[{i}].plugins[{j}].mcp.sampling_model",
                        f"unknown model '{sampling_model}' (it must be one of the organisation's models)",
                    )
        for i, app in enumerate(self.whatsapp.apps):
            if app.organisation not in org_ids:
                raise _PathError(
                    f"whatsapp.apps[{i}].organisation", f"unknown organisation '{app.organisation}'"
                )
            app_org = self.organisation(app.organisation)
            assert app_org is not None
            if app.endpoint is not None:
                named = app_org.endpoint(app.endpoint)
                if named is None:
                    raise _PathError(f"whatsapp.apps[{i}].endpoint", f"organisation '{app_org.id}' has no endpoint '{app.endpoint}'")
                if app.reply_field is not None:
                    properties = (named.output_schema or {}).get("properties")
                    if not isinstance(properties, dict) or app.reply_field not in properties:
                        raise _PathError(
                            f"whatsapp.apps[{i}].reply_field",
                            f"endpoint '{app.endpoint}' has no output_schema property '{app.reply_field}'",
                        )
                known = {*WHATSAPP_VARIABLES, *app.variables}
                missing = [name for name in slots(named.system_prompt or "") if name not in known]
                if missing:
                    raise _PathError(
                        f"whatsapp.apps[{i}].variables",
                        f"endpoint '{app.endpoint}' needs {', '.join(repr(m) for m in missing)} in its system prompt; "
                        f"give {'them' if len(missing) > 1 else 'it'} here",
                    )
            if app.model is not None and app.model not in model_ids:
                raise _PathError(f"whatsapp.apps[{i}].model", f"unknown model '{app.model}'")
            for j, plugin_id in enumerate(app.enabled_plugin_ids):
                if app_org.plugin(plugin_id) is None:
                    raise _PathError(
                        f"whatsapp.apps[{i}].enabled_plugin_ids[{j}]",
                        f"plugin '{plugin_id}' is not configured for organisation '{app_org.id}'",
                    )
        return self

    def organisation(self, org_id: str) -> OrganisationConfig | None:
        for org in self.organisations:
            if org.id == org_id:
                return org
        return None

    def model(self, model_id: str) -> ModelConfig | None:
        for model in self.models:
            if model.id == model_id:
                return model
        return None

    def provider(self, provider_id: str) -> ProviderConfig | None:
        for provider in self.providers:
            if provider.id == provider_id:
                return provider
        return None


def endpoint_problems(org: OrganisationConfig, endpoint: EndpointConfig, model_ids: set[str]) -> list[tuple[str, str]]:
    """What in an endpoint does not fit its organisation: (field path, message) pairs."""
    problems: list[tuple[str, str]] = []
    if endpoint.model not in model_ids:
        problems.append(("model", f"unknown model '{endpoint.model}'"))
    elif org.models is not None and endpoint.model not in org.models:
        problems.append(("model", f"model '{endpoint.model}' is not allowed for organisation '{org.id}'"))
    for k, plugin_id in enumerate(endpoint.plugins or []):
        if org.plugin(plugin_id) is None:
            problems.append((f"plugins[{k}]", f"plugin '{plugin_id}' is not configured for organisation '{org.id}'"))
    known = {g.key for g in org.guardrails}
    for k, key in enumerate(endpoint.guardrails):
        if key not in known:
            problems.append((f"guardrails[{k}]", f"no guardrail '{key}' in organisation '{org.id}'"))
    return problems


class _PathError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, path: str = "", env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree."""
    environ = os.environ if env is None else env
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ and environ[name] != "":
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: interpolate(v, _join(path, str(k)), environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", environ) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith("function-"):
            continue
        else:
            out = _join(out, str(part))
    return out


def settings_from_dict(raw: dict[str, Any], *, source: str = "config") -> Settings:
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _PathError):
            raise ConfigError(f"{source}: {ctx_error.path}: {ctx_error.message}") from None
        loc = _format_loc(tuple(err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown setting"
        raise ConfigError(f"{source}: {loc or '<root>'}: {message}") from None


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load the configuration file, or the embedded default when there is none.

    ``PLUGWAY_CONFIG`` names the file when ``path`` is not given;
    ``PLUGWAY_DATABASE_URL`` and ``PLUGWAY_REDIS_URL`` override the file.
    """
    path = path or os.environ.get("PLUGWAY_CONFIG") or None
    if path is None:
        raw: dict[str, Any] = embedded_default_dict()
        source = "embedded default"
    else:
        file = Path(path)
        source = str(file)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read configuration file ({exc.strerror})") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ConfigError(
                f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save the file as UTF-8"
            ) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "?"
            raise ConfigError(f"{source}: invalid YAML at {where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping")
        try:
            raw = interpolate(loaded)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if os.environ.get("PLUGWAY_DATABASE_URL"):
        raw["database_url"] = os.environ["PLUGWAY_DATABASE_URL"]
    if os.environ.get("PLUGWAY_REDIS_URL"):
        raw["redis_url"] = os.environ["PLUGWAY_REDIS_URL"]
    settings = settings_from_dict(raw, source=source)
    settings.embedded_default = path is None
    return settings


# Python plugins the embedded default enables for the ``default`` organisation;
# the bundled MCP servers (``crm``, ``kb``) are added by ``embedded_default_dict``.
EMBEDDED_PLUGINS: list[dict[str, Any]] = [
    {"id": "clock"},
    {"id": "calculator"},
    {"id": "http"},
]


def embedded_default_dict() -> dict[str, Any]:
    from runtime.mcp.bundled import bundled_plugin_refs

    return {
        "database_url": DEFAULT_DATABASE_URL,
        "providers": [{"id": "demo", "kind": "demo"}],
        "models": [{"id": DEMO_MODEL, "provider": "demo", "embeddings": True}],
        "organisations": [
            {
                "id": DEFAULT_ORGANISATION,
                "plugins": [dict(p) for p in EMBEDDED_PLUGINS] + bundled_plugin_refs(),
            }
        ],
        # A first run shows each request as it is served (and why one failed).
        "logging": {"requests": True},
    }
