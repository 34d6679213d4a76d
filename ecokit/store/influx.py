"""InfluxDB through its v1 HTTP API (/ping, /write, /query).

InfluxDB 1.x, 2.x (2.4+ maps each bucket to a database) and 3.x all serve this API, so
one code path covers every version: basic auth (user/password) for 1.x, a token for 2.x.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from ecokit.durations import duration_seconds
from ecokit.errors import StoreError


@dataclass(frozen=True)
class InfluxEndpoint:
    """Where an InfluxDB is and how to authenticate against its v1 API."""

    url: str
    database: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    version: Literal[1, 2] = 1
    retention_policy: str | None = None


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxV1:
    """A small synchronous client for the v1 API, with a keep-alive session."""

    def __init__(self, endpoint: InfluxEndpoint, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.session = requests.Session()
        if endpoint.token:
            self.session.headers["Authorization"] = f"Token {endpoint.token}"
        elif endpoint.username:
            self.session.auth = (endpoint.username, endpoint.password or "")

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> InfluxV1:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, path: str) -> str:
        return self.endpoint.url.rstrip("/") + path

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self._url(path)
        try:
            return self.session.request(method, url, timeout=kwargs.pop("timeout", self.timeout), **kwargs)
        except requests.RequestException as exc:
            why = "connection refused" if isinstance(exc, requests.ConnectionError) else \
                "no answer in time" if isinstance(exc, requests.Timeout) else exc.__class__.__name__
            error = StoreError(f"InfluxDB is not reachable at {self.endpoint.url} ({why})")
            error.url = self.endpoint.url
            error.hint = "`ecokit status` shows whether influxdb runs, `ecokit logs influxdb` why it stopped"
            raise error from exc

    def ping(self) -> str | None:
        """The server version if it answers /ping, else None (never raises)."""
        try:
            resp = self.session.get(self._url("/ping"), timeout=min(self.timeout, 2.0))
        except requests.RequestException:
            return None
        if resp.status_code in (200, 204):
            return resp.headers.get("X-Influxdb-Version", "unknown")
        return None

    def write(self, lines: str | bytes | Sequence[str], *, precision: str = "ns",
              database: str | None = None) -> None:
        """Write line protocol; raises StoreError with InfluxDB's message on any failure."""
        body = lines if isinstance(lines, str | bytes) else "\n".join(lines)
        if isinstance(body, str):
            body = body.encode("utf-8")
        params = {"db": database or self.endpoint.database, "precision": precision}
        if self.endpoint.retention_policy:
            params["rp"] = self.endpoint.retention_policy
        resp = self._request("POST", "/write", params=params, data=body,
                             headers={"Content-Type": "text/plain; charset=utf-8"})
        if resp.status_code != 204:
            raise StoreError("InfluxDB refused a write", url=resp.url.split("?")[0],
                             status=resp.status_code, body=_error_text(resp))

    def query(self, q: str, *, database: str | None = None, epoch: str | None = "ns",
              params: Mapping[str, Any] | None = None, use_db: bool = True) -> list[dict[str, Any]]:
        """Run InfluxQL (POST); returns the ``results`` list; raises on any statement error.

        ``db``/``rp``/``epoch`` go in the URL, where InfluxDB 2's v1 contract declares ``db``
        (swaggerV1Compat.yml); the statement goes in a form body, which every version reads
        (``r.FormValue("q")``) and which keeps long statements out of URLs and logs.
        """
        url_params: dict[str, str] = {}
        if use_db:
            url_params["db"] = database or self.endpoint.database
            if self.endpoint.retention_policy:
                url_params["rp"] = self.endpoint.retention_policy
        if epoch:
            url_params["epoch"] = epoch
        data: dict[str, str] = {"q": q}
        if params:
            data["params"] = json.dumps(dict(params))
        resp = self._request("POST", "/query", params=url_params, data=data, headers={"Accept": "application/json"})
        if resp.status_code != 200:
            raise StoreError(f"InfluxDB refused the query {q[:80]!r}", url=resp.url.split("?")[0],
                             status=resp.status_code, body=_error_text(resp))
        results: list[dict[str, Any]] = resp.json().get("results", [])
        for result in results:
            if "error" in result:
                raise StoreError(f"InfluxDB query {q[:80]!r} failed: {result['error']}",
                                 url=self.endpoint.url)
        return results

    def get_json(self, path: str, params: Mapping[str, str]) -> Any:
        """GET a JSON document (InfluxDB 2's /api/v2 endpoints, with the same token)."""
        resp = self._request("GET", path, params=dict(params))
        if resp.status_code != 200:
            raise StoreError(f"InfluxDB refused GET {path}", url=resp.url.split("?")[0],
                             status=resp.status_code, body=_error_text(resp))
        return resp.json()

    def send_json(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                  params: Mapping[str, str] | None = None) -> Any:
        """A JSON request to InfluxDB 2's /api/v2 (the same token); its JSON answer, or None
        for 204. Raises StoreError with InfluxDB's message on any other status."""
        resp = self._request(method, path, params=dict(params or {}), json=body)
        if resp.status_code not in (200, 201, 204):
            raise StoreError(f"InfluxDB refused {method} {path}", url=resp.url.split("?")[0],
                             status=resp.status_code, body=_error_text(resp))
        return None if resp.status_code == 204 or not resp.content else resp.json()

    def flux(self, query: str, *, org: str) -> int:
        """Run a Flux program (InfluxDB 2's /api/v2/query); the number of result rows."""
        resp = self._request("POST", "/api/v2/query", params={"org": org},
                             json={"query": query, "type": "flux", "dialect": {"annotations": []}},
                             headers={"Accept": "application/csv", "Accept-Encoding": "gzip"})
        if resp.status_code != 200:
            raise StoreError("InfluxDB refused a Flux query", url=resp.url.split("?")[0],
                             status=resp.status_code, body=_error_text(resp))
        # Annotation-free CSV: one header line per table (",result,table,..."), then rows.
        lines = [line for line in resp.text.splitlines() if line.strip()]
        return sum(1 for line in lines if not line.startswith(",result,"))

    def rows(self, q: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Rows of every series of every statement, as dicts (tags included)."""
        for result in self.query(q, **kwargs):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                columns = series["columns"]
                for values in series.get("values", []):
                    row = dict(zip(columns, values, strict=True))
                    row.update(tags)
                    row.setdefault("_measurement", series.get("name"))
                    yield row


def _error_text(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text))
    except ValueError:
        return resp.text


def shard_duration(retention: str) -> str:
    """The shard group duration InfluxDB 1.x picks for a retention (``1h``/``30d``/...):
    1h under two days, 1d under six months, else 7d. A shard duration longer than the
    retention is refused ("retention policy duration must be greater than the shard duration")."""
    seconds = duration_seconds(retention, units=("s", "m", "h", "d", "w"), bare=False) or 0
    if seconds < 2 * 86400:
        return "1h"
    if seconds < 180 * 86400:
        return "1d"
    return "7d"


def setup_v1(admin: InfluxEndpoint, *, database: str, retention: str,
             users: Mapping[str, tuple[str, Literal["ALL", "READ", "WRITE"]]]) -> None:
    """Create (or confirm) the admin user, the database, its retention and ecokit's users.

    Idempotent: on a provisioned server it only re-applies passwords and grants. InfluxDB
    1.x lets the first admin be created without credentials, and only then.
    """
    client = InfluxV1(admin)
    anon = InfluxV1(InfluxEndpoint(admin.url, admin.database))
    try:
        try:
            client.query("SHOW USERS", use_db=False)
        except StoreError as exc:
            if exc.status not in (401, 403):
                raise
            try:
                anon.query(f"CREATE USER {quote_ident(admin.username or 'admin')} WITH PASSWORD "
                           f"{quote_string(admin.password or '')} WITH ALL PRIVILEGES", use_db=False)
            except StoreError as create_exc:
                raise StoreError(
                    "InfluxDB already has users but refuses this stack's admin password "
                    f"(its data belongs to another setup); `ecokit down --purge` resets it: {create_exc}",
                    url=admin.url) from None
        statements = [f"CREATE DATABASE {quote_ident(database)}"]
        # Re-applied every time, so a changed retention (back to 0 = forever too) takes effect.
        duration, shard = ("INF", "7d") if retention == "0" else (retention, shard_duration(retention))
        statements.append(f"ALTER RETENTION POLICY autogen ON {quote_ident(database)} "
                          f"DURATION {duration} SHARD DURATION {shard} DEFAULT")
        existing = {row.get("user") for row in client.rows("SHOW USERS", use_db=False)}
        for name, (password, privilege) in sorted(users.items()):
            if name in existing:
                statements.append(f"SET PASSWORD FOR {quote_ident(name)} = {quote_string(password)}")
            else:
                statements.append(f"CREATE USER {quote_ident(name)} WITH PASSWORD {quote_string(password)}")
            if privilege == "ALL":
                statements.append(f"GRANT ALL PRIVILEGES TO {quote_ident(name)}")
            else:
                statements.append(f"GRANT {privilege} ON {quote_ident(database)} TO {quote_ident(name)}")
        for statement in statements:
            client.query(statement, use_db=False)
    finally:
        client.close()
        anon.close()


# -- InfluxDB 2: where v1 writes land ----------------------------------------------------------
#
# ecokit relies on InfluxDB 2.4+'s automatic ("virtual") DBRP mapping: the bucket named like
# the database takes /write?db=<bucket> and /query?db=<bucket> (retention policy autogen),
# with no mapping created. An explicit mapping for the same database overrides it and sends
# the writes elsewhere; dbrp_problem() finds that case from GET /api/v2/dbrps.


def dbrp_request(org: str, database: str) -> tuple[str, dict[str, str]]:
    """The DBRP listing for one database (virtual mappings included, influxdb dbrp FindMany)."""
    return "/api/v2/dbrps", {"org": org, "db": database}


def dbrp_problem(mappings: Sequence[Mapping[str, Any]], database: str) -> str | None:
    """Why v1 requests for ``database`` would not reach the bucket of that name; None when they do."""
    ours = [m for m in mappings if m.get("database") == database]
    virtual = {m.get("bucketID") for m in ours if m.get("virtual") and m.get("retention_policy") == "autogen"}
    explicit = [m for m in ours if not m.get("virtual") and m.get("default")]
    if explicit and virtual and explicit[0].get("bucketID") not in virtual:
        found = explicit[0]
        return (f"database {database!r} is mapped to bucket id {found.get('bucketID')} by an explicit DBRP "
                f"mapping (id {found.get('id')}, retention policy {found.get('retention_policy')!r}), so v1 writes "
                f"and InfluxQL queries go there, not to the bucket {database!r}")
    if not explicit and not virtual:
        return f"no DBRP mapping serves database {database!r} (InfluxDB 2.4+ maps each bucket automatically)"
    return None


def check_v1_mapping(client: InfluxV1, *, org: str, database: str) -> None:
    """Raise StoreError when v1 writes for ``database`` would miss the bucket of that name."""
    path, params = dbrp_request(org, database)
    listed = client.get_json(path, params)
    problem = dbrp_problem(listed.get("content", []) if isinstance(listed, dict) else [], database)
    if problem:
        raise StoreError(f"InfluxDB 2: {problem}; `influx v1 dbrp list --db {database}` shows it, "
                         "`influx v1 dbrp delete` removes it", url=client.endpoint.url)
