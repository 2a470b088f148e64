#!/usr/bin/env python3
"""A faithful fake of the Amazon Bedrock runtime API (InvokeModel, InvokeModelWithResponseStream,
CountTokens for Anthropic models), with STS AssumeRoleWithWebIdentity and a container-credentials
endpoint, for end-to-end tests.

Authentication is checked as AWS does: SigV4 signatures are recomputed with botocore's own
signer (an implementation independent of the gateway's) from the request exactly as received;
the credential scope (region, service `bedrock`), the clock skew (5 minutes), the session token
of temporary credentials and their expiry are checked; a Bedrock API key is accepted as Bearer.
Refusals are 403 with `x-amzn-ErrorType` and `{"message": ...}`.

Model calls are answered by an upstream fake Anthropic (`--upstream`, `x-api-key`): JSON is
returned unchanged; a stream is re-encoded as an AWS event stream (one `chunk` per Anthropic
event, `{"bytes": base64, "p": padding}`, pings dropped, `amazon-bedrock-invocationMetrics` added
to `message_stop`), frame by frame as the upstream sends; an upstream `error` event becomes an
exception message. Upstream errors become Bedrock errors.

Endpoints:
  POST /model/{id}/invoke | /invoke-with-response-stream | /count-tokens
  POST /sts/                       (form, Action=AssumeRoleWithWebIdentity)
  GET  /container-credentials      (Authorization: <--container-token>)

`--record FILE` appends one JSON line per request: method, path, model (decoded), auth
(sigv4 | api_key | none | sts | container), signature_ok, status, headers (the names
received), body (what the client sent, decoded), upstream_body (what was forwarded).
"""

import argparse
import base64
import datetime
import hmac
import http.client
import json
import os
import random
import secrets
import string
import sys
import threading
import time
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ERROR_NS = "http://internal.amazon.com/coral/com.amazon.bedrock/"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)
GEO_PREFIXES = ("us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")
MAX_SKEW = datetime.timedelta(minutes=5)
TEMP_LIFETIME = datetime.timedelta(minutes=15)


class AwsError(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def validation(message):
    return AwsError(400, "ValidationException", message)


def malformed(detail):
    return validation(f"Malformed input request: #: {detail}, please reformat your input and try again.")


# ---------------------------------------------------------------------------------------------
# The AWS event-stream encoding (application/vnd.amazon.eventstream).


def _header(name, value):
    n = name.encode()
    v = value.encode()
    return bytes([len(n)]) + n + b"\x07" + len(v).to_bytes(2, "big") + v


def event_message(headers, payload):
    h = b"".join(_header(k, v) for k, v in headers)
    total = 16 + len(h) + len(payload)
    prelude = total.to_bytes(4, "big") + len(h).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    msg = prelude + h + payload
    return msg + zlib.crc32(msg).to_bytes(4, "big")


def chunk_frame(event_json):
    pad = "".join(random.choice(string.ascii_letters) for _ in range(random.randint(1, 20)))
    payload = json.dumps({"bytes": base64.b64encode(event_json).decode(), "p": pad}, separators=(",", ":"))
    return event_message(
        [(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
        payload.encode(),
    )


def exception_frame(kind, message):
    return event_message(
        [(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")],
        json.dumps({"message": message}).encode(),
    )


# ---------------------------------------------------------------------------------------------


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        # access key id -> (secret, session token or None, expiry or None)
        self.creds = {args.access_key_id: (args.secret_access_key, None, None)}

    def issue(self):
        akid = "ASIA" + "".join(random.choice(string.ascii_uppercase + string.digits) for _ in range(16))
        secret = secrets.token_urlsafe(30)[:40]
        token = base64.b64encode(secrets.token_bytes(96)).decode()
        expiry = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + TEMP_LIFETIME
        with self.lock:
            self.creds[akid] = (secret, token, expiry)
        return akid, secret, token, expiry

    def record(self, entry):
        if not self.args.record:
            return
        line = json.dumps(entry, sort_keys=True)
        with self.lock, open(self.args.record, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def iso(ts):
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeBedrock/1.0"
    state: State = None  # set in main

    def log_message(self, fmt, *args):  # quiet
        if os.environ.get("FAKE_BEDROCK_LOG"):
            super().log_message(fmt, *args)

    # -- plumbing ------------------------------------------------------------------------------

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, content_type="application/json", extra=()):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _aws_error(self, err):
        self._send(
            err.status,
            json.dumps({"message": err.message}).encode(),
            extra=[("x-amzn-ErrorType", f"{err.kind}:{ERROR_NS}")],
        )

    def _entry(self, **kw):
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": sorted({k.lower() for k in self.headers.keys()}),
        }
        entry.update(kw)
        return entry

    # -- authentication ------------------------------------------------------------------------

    def _authenticate(self, body):
        """Returns the auth kind; raises AwsError (403) as AWS would."""
        auth = self.headers.get("authorization")
        if not auth:
            raise AwsError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        if auth.startswith("Bearer "):
            if self.state.args.api_key and hmac.compare_digest(auth[7:].strip(), self.state.args.api_key):
                return "api_key"
            raise AwsError(403, "UnrecognizedClientException", "Invalid API Key format: Must start with pre-defined prefix")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise AwsError(403, "IncompleteSignatureException", f"Authorization header requires 'Credential' parameter.")
        fields = {}
        for part in auth[len("AWS4-HMAC-SHA256 "):].split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v
        try:
            akid, date, region, service, terminator = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
            signature = fields["Signature"]
        except (KeyError, ValueError):
            raise AwsError(403, "IncompleteSignatureException", "Authorization header is malformed.")
        with self.state.lock:
            known = self.state.creds.get(akid)
        if known is None:
            raise AwsError(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        secret, token, expiry = known
        if region != self.state.args.region:
            raise AwsError(403, "InvalidSignatureException",
                           f"Credential should be scoped to a valid region, not '{region}'. ")
        if service != "bedrock":
            raise AwsError(403, "InvalidSignatureException",
                           f"Credential should be scoped to correct service: 'bedrock'. ")
        if terminator != "aws4_request":
            raise AwsError(403, "InvalidSignatureException", "Credential should be scoped with a valid terminator: 'aws4_request'")
        amz_date = self.headers.get("x-amz-date")
        if not amz_date or "x-amz-date" not in signed or "host" not in signed:
            raise AwsError(403, "IncompleteSignatureException",
                           "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            raise AwsError(403, "IncompleteSignatureException", "Date must be in ISO-8601 'basic format'.")
        now = datetime.datetime.now(datetime.timezone.utc)
        if abs(now - when) > MAX_SKEW:
            raise AwsError(403, "InvalidSignatureException",
                           f"Signature expired: {amz_date} is now earlier than {iso(now - MAX_SKEW)}")
        if date != amz_date[:8]:
            raise AwsError(403, "InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP")
        if token is not None:
            presented = self.headers.get("x-amz-security-token")
            if presented is None or not hmac.compare_digest(presented, token):
                raise AwsError(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
            if expiry is not None and now >= expiry:
                raise AwsError(403, "ExpiredTokenException", "The security token included in the request is expired")
        # Recompute with botocore from the request as received: the raw path, the signed headers
        # and the body.
        headers = {}
        for name in signed:
            values = self.headers.get_all(name)
            if values is None:
                raise AwsError(403, "InvalidSignatureException", SIGNATURE_MISMATCH)
            headers[name] = ",".join(values)
        req = AWSRequest(method=self.command, url=f"http://{headers['host']}{self.path}", headers=headers, data=body)
        creds = Credentials(akid, secret, headers.get("x-amz-security-token"))
        signer = SigV4Auth(creds, "bedrock", region)
        req.context["timestamp"] = amz_date
        signer._modify_request_before_signing(req)
        canonical = signer.canonical_request(req)
        expected = signer.signature(signer.string_to_sign(req, canonical), req)
        if signer.signed_headers(signer.headers_to_sign(req)) != ";".join(signed) or not hmac.compare_digest(
            expected, signature
        ):
            raise AwsError(403, "InvalidSignatureException", SIGNATURE_MISMATCH)
        return "sigv4"

    # -- routes --------------------------------------------------------------------------------

    def do_GET(self):
        if self.path.split("?")[0] == "/container-credentials":
            return self._container()
        self._send(404, json.dumps({"message": "Not Found"}).encode(),
                   extra=[("x-amzn-ErrorType", f"UnknownOperationException:{ERROR_NS}")])

    def do_POST(self):
        body = self._body()
        path = self.path.split("?")[0]
        if path.rstrip("/") == "/sts":
            return self._sts(body)
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "model" and parts[3] in ("invoke", "invoke-with-response-stream", "count-tokens"):
            return self._model(urllib.parse.unquote(parts[2]), parts[3], body)
        self._send(404, json.dumps({"message": "Not Found"}).encode(),
                   extra=[("x-amzn-ErrorType", f"UnknownOperationException:{ERROR_NS}")])

    def _sts(self, body):
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        one = lambda k: (form.get(k) or [""])[0]
        expected = ""
        if self.state.args.web_identity_token_file:
            with open(self.state.args.web_identity_token_file, encoding="utf-8") as f:
                expected = f.read().strip()
        ok = (
            one("Action") == "AssumeRoleWithWebIdentity"
            and one("Version") == "2011-06-15"
            and one("RoleArn").startswith("arn:aws:iam::")
            and one("RoleSessionName")
            and expected
            and hmac.compare_digest(one("WebIdentityToken"), expected)
        )
        self.state.record(self._entry(auth="sts", signature_ok=bool(ok), status=200 if ok else 400,
                                      body={k: v for k, v in ((k, one(k)) for k in form) if k != "WebIdentityToken"}))
        rid = str(uuid.uuid4())
        if not ok:
            xml = (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                "<Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key from your "
                f"identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements</Message>"
                f"</Error><RequestId>{rid}</RequestId></ErrorResponse>"
            )
            return self._send(400, xml.encode(), "text/xml")
        akid, secret, token, expiry = self.state.issue()
        role = one("RoleArn")
        session = one("RoleSessionName")
        xml = (
            '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n'
            "  <AssumeRoleWithWebIdentityResult>\n"
            "    <Audience>sts.amazonaws.com</Audience>\n"
            "    <AssumedRoleUser>\n"
            f"      <AssumedRoleId>AROAFAKEROLEID:{session}</AssumedRoleId>\n"
            f"      <Arn>{role.replace(':iam::', ':sts::').replace(':role/', ':assumed-role/')}/{session}</Arn>\n"
            "    </AssumedRoleUser>\n"
            "    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/FAKE</Provider>\n"
            "    <Credentials>\n"
            f"      <SessionToken>{token}</SessionToken>\n"
            f"      <SecretAccessKey>{secret}</SecretAccessKey>\n"
            f"      <Expiration>{iso(expiry)}</Expiration>\n"
            f"      <AccessKeyId>{akid}</AccessKeyId>\n"
            "    </Credentials>\n"
            "    <SubjectFromWebIdentityToken>system:serviceaccount:tollgate:tollgate</SubjectFromWebIdentityToken>\n"
            "  </AssumeRoleWithWebIdentityResult>\n"
            f"  <ResponseMetadata>\n    <RequestId>{rid}</RequestId>\n  </ResponseMetadata>\n"
            "</AssumeRoleWithWebIdentityResponse>\n"
        )
        self._send(200, xml.encode(), "text/xml")

    def _container(self):
        expected = self.state.args.container_token
        presented = self.headers.get("authorization") or ""
        ok = bool(expected) and hmac.compare_digest(presented, expected)
        self.state.record(self._entry(auth="container", signature_ok=ok, status=200 if ok else 401))
        if not ok:
            return self._send(401, json.dumps({"code": "InvalidToken", "message": "invalid token"}).encode())
        akid, secret, token, expiry = self.state.issue()
        self._send(200, json.dumps({
            "AccessKeyId": akid, "SecretAccessKey": secret, "Token": token,
            "AccountId": "123456789012", "Expiration": iso(expiry),
        }).encode())

    def _model(self, model_id, action, raw):
        entry = self._entry(model=model_id, action=action, auth="none", signature_ok=False)
        try:
            entry["auth"] = self._authenticate(raw)
            entry["signature_ok"] = True
            if action == "count-tokens":
                self._count_tokens(model_id, raw, entry)
            else:
                self._invoke(model_id, raw, action == "invoke-with-response-stream", entry)
        except AwsError as e:
            entry["status"] = e.status
            entry["error"] = e.kind
            self.state.record(entry)
            return self._aws_error(e)
        self.state.record(entry)

    # -- model calls ---------------------------------------------------------------------------

    @staticmethod
    def _invoke_body(raw, need_max_tokens=True):
        try:
            body = json.loads(raw)
        except ValueError:
            raise validation("Malformed input request, please reformat your input and try again.")
        if not isinstance(body, dict):
            raise malformed("expected type: JSONObject, found: " + type(body).__name__)
        for key in ("model", "stream"):
            if key in body:
                raise malformed(f"extraneous key [{key}] is not permitted")
        if "anthropic_version" not in body:
            raise malformed("required key [anthropic_version] not found")
        if body["anthropic_version"] != "bedrock-2023-05-31":
            raise validation("Invalid API version")
        if need_max_tokens and "max_tokens" not in body:
            raise malformed("required key [max_tokens] not found")
        betas = body.get("anthropic_beta")
        if betas is not None and (not isinstance(betas, list) or not all(isinstance(b, str) for b in betas)):
            raise malformed("anthropic_beta: expected type: JSONArray")
        return body

    def _upstream(self, path, body, betas):
        up = urllib.parse.urlsplit(self.state.args.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=300)
        headers = {
            "x-api-key": self.state.args.upstream_key,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        }
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        data = json.dumps(body).encode()
        conn.request("POST", up.path.rstrip("/") + path, body=data, headers=headers)
        return conn, conn.getresponse(), data

    @staticmethod
    def _map_upstream_error(status, raw):
        try:
            message = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = raw.decode(errors="replace")[:500]
        if status == 429:
            return AwsError(429, "ThrottlingException", message)
        if status == 529:
            return AwsError(503, "ServiceUnavailableException", message)
        if status in (400, 413):
            return AwsError(400, "ValidationException", message)
        if status == 404:
            return AwsError(404, "ResourceNotFoundException", message)
        if status in (401, 403):
            return AwsError(403, "AccessDeniedException", message)
        return AwsError(500, "InternalServerException", message)

    def _forwarded(self, body, model_id, stream):
        out = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
        out["model"] = model_id
        if stream:
            out["stream"] = True
        return out

    def _invoke(self, model_id, raw, stream, entry):
        body = self._invoke_body(raw)
        entry["body"] = body
        forwarded = self._forwarded(body, model_id, stream)
        entry["upstream_body"] = forwarded
        started = time.monotonic()
        conn, resp, _ = self._upstream("/v1/messages", forwarded, body.get("anthropic_beta"))
        try:
            if resp.status != 200:
                raise self._map_upstream_error(resp.status, resp.read())
            if not stream:
                data = resp.read()
                entry["status"] = 200
                extra = [("x-amzn-bedrock-invocation-latency", str(int((time.monotonic() - started) * 1000)))]
                try:
                    usage = json.loads(data).get("usage", {})
                    extra += [("x-amzn-bedrock-input-token-count", str(usage.get("input_tokens", 0))),
                              ("x-amzn-bedrock-output-token-count", str(usage.get("output_tokens", 0)))]
                except ValueError:
                    pass
                return self._send(200, data, "application/json", extra)
            entry["status"] = 200
            self._relay_stream(resp, started)
        finally:
            conn.close()

    def _relay_stream(self, resp, started):
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("x-amzn-bedrock-content-type", "application/json")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def write(frame):
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.wfile.flush()

        input_tokens = output_tokens = 0
        first_byte = None
        name, data = None, []
        try:
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                if line:
                    field, _, value = line.partition(b":")
                    value = value[1:] if value.startswith(b" ") else value
                    if field == b"event":
                        name = value.decode()
                    elif field == b"data":
                        data.append(value)
                    continue
                if not data:
                    name = None
                    continue
                payload = b"\n".join(data)
                kind, name, data = name, None, []
                if first_byte is None:
                    first_byte = int((time.monotonic() - started) * 1000)
                event = json.loads(payload)
                kind = event.get("type", kind)
                if kind == "ping":
                    continue
                if kind == "error":
                    err = event.get("error", {})
                    etype, message = err.get("type"), err.get("message", "")
                    exception = {
                        "overloaded_error": "serviceUnavailableException",
                        "rate_limit_error": "throttlingException",
                        "invalid_request_error": "validationException",
                    }.get(etype, "modelStreamErrorException")
                    write(exception_frame(exception, message))
                    break
                if kind == "message_start":
                    input_tokens = event.get("message", {}).get("usage", {}).get("input_tokens", 0)
                elif kind == "message_delta":
                    output_tokens = event.get("usage", {}).get("output_tokens", output_tokens)
                elif kind == "message_stop":
                    event["amazon-bedrock-invocationMetrics"] = {
                        "inputTokenCount": input_tokens,
                        "outputTokenCount": output_tokens,
                        "invocationLatency": int((time.monotonic() - started) * 1000),
                        "firstByteLatency": first_byte or 0,
                    }
                    payload = json.dumps(event, separators=(",", ":")).encode()
                write(chunk_frame(payload))
        except (OSError, http.client.HTTPException):
            write(exception_frame("internalServerException", "The upstream model stream broke."))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _count_tokens(self, model_id, raw, entry):
        try:
            req = json.loads(raw)
            encoded = req["input"]["invokeModel"]["body"]
            inner = base64.b64decode(encoded, validate=True)
        except (ValueError, KeyError, TypeError):
            raise AwsError(400, "SerializationException", "Could not parse the request body (input.invokeModel.body must be base64).")
        if model_id.startswith(GEO_PREFIXES) or ":inference-profile/" in model_id:
            raise validation("The provided model doesn't support counting tokens.")
        body = self._invoke_body(inner)
        entry["body"] = body
        forwarded = {k: v for k, v in self._forwarded(body, model_id, False).items() if k != "max_tokens"}
        entry["upstream_body"] = forwarded
        conn, resp, _ = self._upstream("/v1/messages/count_tokens", forwarded, body.get("anthropic_beta"))
        try:
            data = resp.read()
            if resp.status != 200:
                raise self._map_upstream_error(resp.status, data)
            tokens = json.loads(data)["input_tokens"]
        finally:
            conn.close()
        entry["status"] = 200
        self._send(200, json.dumps({"inputTokens": tokens}).encode())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="base URL of a fake Anthropic")
    p.add_argument("--upstream-key", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--access-key-id", required=True)
    p.add_argument("--secret-access-key", required=True)
    p.add_argument("--api-key")
    p.add_argument("--web-identity-token-file")
    p.add_argument("--container-token")
    p.add_argument("--record")
    args = p.parse_args()
    Handler.state = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
