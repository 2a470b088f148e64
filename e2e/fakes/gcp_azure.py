#!/usr/bin/env python3
"""Faithful fakes of Google Vertex AI and Azure AI Foundry (Anthropic models) with their token
services, in front of the fake Anthropic upstream.

    gcp_azure.py vertex  --port P --project PROJ --region REGION --upstream URL --upstream-key K
                         [--write-sa-key FILE] [--token-expires-in S] [--expect-host HOST]
                         [--record FILE]
    gcp_azure.py foundry --port P --tenant T --client-id C [--client-secret S]
                         [--federated-token TOKEN] [--api-key KEY] --upstream URL
                         --upstream-key K [--token-expires-in S] [--record FILE]

Vertex mode serves
  POST /token (Google's OAuth token endpoint): a JWT bearer assertion (RFC 7523) whose RS256
       signature is checked with the service account's PUBLIC key by PyJWT/cryptography, with
       aud = this token_uri, iss = the service account, scope = cloud-platform, exp <= iat + 1 h;
  GET  /computeMetadata/v1/instance/service-accounts/default/token (the metadata server;
       requires `Metadata-Flavor: Google`);
  POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:rawPredict
       | :streamRawPredict, and .../models/count-tokens:rawPredict.
The service account key is generated at start; --write-sa-key writes its JSON key file (with
token_uri pointing here) before the port opens.

Foundry mode serves
  POST /{tenant}/oauth2/v2.0/token (Entra ID v2, client credentials with a client secret or a
       federated client assertion, scope https://ai.azure.com/.default);
  POST /anthropic/v1/messages and /anthropic/v1/messages/count_tokens (`api-key` or
       `x-api-key`, or `Authorization: Bearer <token it issued>`).

Both forward model calls to the upstream fake Anthropic (x-api-key K) and return its answer
unchanged, streaming SSE through as it arrives; Vertex turns upstream 429/529 into Google errors
(RESOURCE_EXHAUSTED 429, UNAVAILABLE 503), as Vertex AI does. Every request is recorded as one
JSON line in --record. Prints `listening on 127.0.0.1:PORT` when ready.
"""

import argparse
import http.client
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FOUNDRY_SCOPE = "https://ai.azure.com/.default"
VERTEX_VERSION = "vertex-2023-10-16"
MODEL_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)"
    r"/publishers/anthropic/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "host", "proxy-connection"}


class Tokens:
    """Access tokens this fake issued, with their expiry."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tokens = {}

    def issue(self, prefix, lifetime):
        token = prefix + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.time() + lifetime
        return token

    def valid(self, token):
        with self._lock:
            exp = self._tokens.get(token)
        return exp is not None and exp > time.time()

    def known(self, token):
        with self._lock:
            return token in self._tokens


class Recorder:
    def __init__(self, path):
        self._path = path
        self._lock = threading.Lock()

    def record(self, entry):
        if not self._path:
            return
        line = json.dumps(entry, sort_keys=True)
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def google_error(code, status, message):
    return code, {"error": {"code": code, "message": message, "status": status}}


def anthropic_error(code, kind, message):
    return code, {"type": "error", "error": {"type": kind, "message": message},
                  "request_id": "req_fake_" + secrets.token_hex(8)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-cloud"

    # Set by main().
    app = None

    def log_message(self, fmt, *args):  # quiet: the record file is the log
        pass

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _commit(self, status):
        """Records this request once, before its answer completes (so a client that has the
        answer finds the record)."""
        entry = getattr(self, "_entry", None)
        if entry is not None:
            self._entry = None
            entry["status"] = status
            self.app.recorder.record(entry)

    def _send_json(self, status, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("content-length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self._commit(status)
        self.wfile.write(data)
        return status

    def _handle(self, method):
        body = self._body() if method == "POST" else b""
        entry = {"time": time.time(), "method": method, "path": self.path,
                 "headers": {k.lower(): v for k, v in self.headers.items()},
                 "body": body.decode("utf-8", "replace")}
        self._entry = entry
        try:
            # Answers that did not record themselves (plain-text ones) are recorded here.
            self._commit(self.app.route(self, method, body, entry))
        except (BrokenPipeError, ConnectionResetError):
            self._commit("client-gone")
        except Exception as e:  # a fake must answer; the record says what broke
            entry["exception"] = repr(e)
            try:
                self._send_json(500, {"error": {"code": 500, "message": "fake crashed: " + repr(e),
                                                "status": "INTERNAL"}})
            except OSError:
                self._commit(500)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    # -- forwarding ---------------------------------------------------------------------------

    def forward(self, upstream, upstream_key, path, headers, body, map_error=None):
        """POSTs to the upstream fake Anthropic and relays its answer, streaming."""
        u = urllib.parse.urlsplit(upstream)
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=120)
        out = {k: v for k, v in headers.items()}
        out["x-api-key"] = upstream_key
        out["content-length"] = str(len(body))
        conn.request("POST", path, body=body, headers=out)
        resp = conn.getresponse()
        if map_error is not None and resp.status in (429, 529):
            resp.read()
            conn.close()
            code, obj = map_error(resp.status)
            return self._send_json(code, obj)
        self.send_response(resp.status)
        ctype = resp.getheader("content-type", "")
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        if ctype.startswith("text/event-stream"):
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            try:
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self._commit(resp.status)
                self.wfile.write(b"0\r\n\r\n")
            except (http.client.IncompleteRead, ConnectionError, OSError):
                # Upstream cut the stream: cut ours the same way.
                self._commit(resp.status)
                self.close_connection = True
        else:
            try:
                data = resp.read()
            except http.client.IncompleteRead as e:
                data = e.partial
                self.close_connection = True
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self._commit(resp.status)
            self.wfile.write(data)
        conn.close()
        return resp.status


def bearer(handler):
    auth = handler.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


# -- Vertex -----------------------------------------------------------------------------------

class Vertex:
    def __init__(self, args):
        self.args = args
        self.tokens = Tokens()
        self.recorder = Recorder(args.record)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self.key.public_key()
        self.key_id = secrets.token_hex(20)
        self.client_email = f"tollgate-test@{args.project}.iam.gserviceaccount.com"
        self.token_uri = f"http://127.0.0.1:{args.port}/token"

    def sa_json(self):
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return {
            "type": "service_account", "project_id": self.args.project,
            "private_key_id": self.key_id, "private_key": pem,
            "client_email": self.client_email, "client_id": str(secrets.randbits(64)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.token_uri,
        }

    def route(self, h, method, body, entry):
        path = urllib.parse.urlsplit(h.path).path
        if method == "POST" and path == "/token":
            entry["kind"] = "token"
            return self.token(h, body)
        if method == "GET" and path == "/computeMetadata/v1/instance/service-accounts/default/token":
            entry["kind"] = "metadata"
            return self.metadata(h)
        m = MODEL_PATH.match(path)
        if method == "POST" and m:
            entry["kind"] = "vertex"
            return self.predict(h, body, m, entry)
        code, obj = google_error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")
        return h._send_json(code, obj)

    def token(self, h, body):
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return h._send_json(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: " + form.get("grant_type", "")})
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, self.public_key, algorithms=["RS256"], audience=self.token_uri,
                                issuer=self.client_email, options={"require": ["exp", "iat", "iss", "aud"]},
                                leeway=60)
        except jwt.InvalidSignatureError:
            return h._send_json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        except jwt.ExpiredSignatureError:
            return h._send_json(400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."})
        except jwt.PyJWTError as e:
            return h._send_json(400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {e}"})
        if header.get("kid") != self.key_id:
            return h._send_json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        if claims["exp"] - claims["iat"] > 3600 or claims["iat"] > time.time() + 60:
            return h._send_json(400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."})
        if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            return h._send_json(400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience provided."})
        lifetime = self.args.token_expires_in
        return h._send_json(200, {"access_token": self.tokens.issue("ya29.fake-sa-", lifetime),
                                  "expires_in": lifetime, "token_type": "Bearer"})

    def metadata(self, h):
        if h.headers.get("metadata-flavor") != "Google" or h.headers.get("x-forwarded-for"):
            h.send_response(403)
            data = b"Missing Metadata-Flavor:Google header.\n"
            h.send_header("content-type", "text/plain")
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return 403
        lifetime = self.args.token_expires_in
        return h._send_json(200, {"access_token": self.tokens.issue("ya29.fake-md-", lifetime),
                                  "expires_in": lifetime, "token_type": "Bearer"},
                            extra=[("metadata-flavor", "Google")])

    def predict(self, h, body, m, entry):
        a = self.args
        token = bearer(h)
        if not token or not self.tokens.valid(token):
            code, obj = google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")
            return h._send_json(code, obj, extra=[("www-authenticate", 'Bearer realm="https://accounts.google.com/"')])
        project, region, model, method = (urllib.parse.unquote(m.group(g)) for g in ("project", "region", "model", "method"))
        entry["model"] = model
        if a.expect_host and h.headers.get("host") != a.expect_host:
            code, obj = google_error(404, "NOT_FOUND", f"Host {h.headers.get('host')} does not serve location {region}.")
            return h._send_json(code, obj)
        if project != a.project:
            code, obj = google_error(403, "PERMISSION_DENIED", f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/projects/{project}/locations/{region}/publishers/anthropic/models/{model}' (or it may not exist).")
            return h._send_json(code, obj)
        if region != a.region:
            code, obj = google_error(404, "NOT_FOUND", f"Publisher Model `projects/{project}/locations/{region}/publishers/anthropic/models/{model}` not found.")
            return h._send_json(code, obj)
        if method not in ("rawPredict", "streamRawPredict"):
            code, obj = google_error(400, "INVALID_ARGUMENT", f"Unknown method {method}.")
            return h._send_json(code, obj)
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            code, obj = google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
            return h._send_json(code, obj)
        count = model == "count-tokens"
        if req.get("anthropic_version") != VERTEX_VERSION:
            code, obj = anthropic_error(400, "invalid_request_error",
                                        "anthropic_version: Field required" if "anthropic_version" not in req
                                        else f"anthropic_version: Input should be '{VERTEX_VERSION}'")
            return h._send_json(code, obj)
        if count:
            if "model" not in req:
                code, obj = anthropic_error(400, "invalid_request_error", "model: Field required")
                return h._send_json(code, obj)
            upstream_model, upstream_path = req["model"], "/v1/messages/count_tokens"
        else:
            if "model" in req:
                code, obj = anthropic_error(400, "invalid_request_error", "model: Extra inputs are not permitted")
                return h._send_json(code, obj)
            upstream_model, upstream_path = model, "/v1/messages"
        del req["anthropic_version"]
        req["model"] = upstream_model
        headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
        for name in ("anthropic-beta", "x-fake-scenario"):
            if h.headers.get(name):
                headers[name] = h.headers.get(name)
        return h.forward(a.upstream, a.upstream_key, upstream_path, headers, json.dumps(req).encode(),
                         map_error=self.upstream_error)

    @staticmethod
    def upstream_error(status):
        if status == 429:
            return google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-claude. Please submit a quota increase request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.")
        return google_error(503, "UNAVAILABLE", "The service is currently unavailable.")


# -- Foundry ----------------------------------------------------------------------------------

class Foundry:
    def __init__(self, args):
        self.args = args
        self.tokens = Tokens()
        self.recorder = Recorder(args.record)

    def route(self, h, method, body, entry):
        path = urllib.parse.urlsplit(h.path).path
        m = re.match(r"^/([^/]+)/oauth2/v2\.0/token$", path)
        if method == "POST" and m:
            entry["kind"] = "entra"
            return self.token(h, m.group(1), body)
        if method == "POST" and path in ("/anthropic/v1/messages", "/anthropic/v1/messages/count_tokens"):
            entry["kind"] = "foundry"
            return self.messages(h, path[len("/anthropic"):], body)
        return h._send_json(404, {"error": {"code": "404", "message": "Resource not found"}})

    def token(self, h, tenant, body):
        a = self.args
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))

        def refuse(status, error, code, description):
            return h._send_json(status, {"error": error, "error_description": f"AADSTS{code}: {description}",
                                         "error_codes": [code], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                                         "trace_id": secrets.token_hex(16), "correlation_id": secrets.token_hex(16)})

        if tenant != a.tenant:
            return refuse(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if form.get("client_id") != a.client_id:
            return refuse(400, "unauthorized_client", 700016, f"Application with identifier '{form.get('client_id')}' was not found in the directory.")
        if form.get("scope") != FOUNDRY_SCOPE:
            return refuse(400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid.")
        if "client_secret" in form:
            if not a.client_secret or not secrets.compare_digest(form["client_secret"], a.client_secret):
                return refuse(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.")
        elif form.get("client_assertion_type") == CLIENT_ASSERTION_TYPE:
            if not a.federated_token or not secrets.compare_digest(form.get("client_assertion", ""), a.federated_token):
                return refuse(401, "invalid_client", 700213, "No matching federated identity record found for presented assertion.")
        else:
            return refuse(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
        lifetime = self.args.token_expires_in
        return h._send_json(200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                                  "access_token": self.tokens.issue("eyJ0eXAi.fake-entra-", lifetime)})

    def messages(self, h, upstream_path, body):
        a = self.args
        key = h.headers.get("api-key") or h.headers.get("x-api-key")
        token = bearer(h)
        if key is not None:
            if not a.api_key or not secrets.compare_digest(key, a.api_key):
                return h._send_json(401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}})
        elif token is None or not self.tokens.valid(token):
            return h._send_json(401, {"error": {"code": "401", "message": "Unauthorized. Access token is missing, invalid, audience is incorrect (https://ai.azure.com), or have expired."}})
        headers = {k.lower(): v for k, v in h.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() not in ("authorization", "api-key", "x-api-key", "accept-encoding")}
        return h.forward(a.upstream, a.upstream_key, upstream_path, headers, body)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("vertex", "foundry"):
        s = sub.add_parser(mode)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--upstream", required=True)
        s.add_argument("--upstream-key", required=True)
        s.add_argument("--token-expires-in", type=int, default=3600)
        s.add_argument("--record")
        if mode == "vertex":
            s.add_argument("--project", required=True)
            s.add_argument("--region", required=True)
            s.add_argument("--write-sa-key")
            s.add_argument("--expect-host")
        else:
            s.add_argument("--tenant", required=True)
            s.add_argument("--client-id", required=True)
            s.add_argument("--client-secret")
            s.add_argument("--federated-token")
            s.add_argument("--api-key")
    args = p.parse_args()
    app = Vertex(args) if args.mode == "vertex" else Foundry(args)
    if args.mode == "vertex" and args.write_sa_key:
        tmp = args.write_sa_key + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(app.sa_json(), f, indent=2)
        os.replace(tmp, args.write_sa_key)
    Handler.app = app
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
