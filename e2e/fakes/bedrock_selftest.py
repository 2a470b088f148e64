#!/usr/bin/env python3
"""Self-test of the fake Bedrock with the real boto3 `bedrock-runtime` client: proves that the
fake accepts botocore's own SigV4 signatures and that boto3's own event-stream parser reads the
fake's frames; and that a request signed with a wrong secret is refused.

Usage: bedrock_selftest.py --endpoint URL --region R --access-key-id K --secret-access-key S
       [--api-key KEY] [--web-identity-token TOKEN] [--container-token TOKEN]
Prints one JSON report on stdout; exit status 0 when every check passed.
"""

import argparse
import base64
import json
import sys
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def body(text, **extra):
    b = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
    }
    b.update(extra)
    return json.dumps(b)


def client(args, key, secret, token=None):
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--access-key-id", required=True)
    p.add_argument("--secret-access-key", required=True)
    p.add_argument("--web-identity-token")
    p.add_argument("--container-token")
    args = p.parse_args()
    report, failures = {}, []

    def check(name, cond, detail=""):
        report[name] = bool(cond)
        if not cond:
            failures.append(f"{name}: {detail}")

    c = client(args, args.access_key_id, args.secret_access_key)

    # InvokeModel.
    r = c.invoke_model(modelId=MODEL, body=body("hello"), contentType="application/json", accept="application/json")
    msg = json.loads(r["body"].read())
    check("invoke_text", msg["content"][0]["text"] == "Hello from fake-anthropic.", msg)
    check("invoke_usage", msg["usage"]["input_tokens"] > 0 and msg["usage"]["output_tokens"] == 3, msg["usage"])
    check("invoke_model_echoed", msg.get("model") == MODEL, msg.get("model"))

    # InvokeModelWithResponseStream, parsed by boto3's own event-stream parser.
    r = c.invoke_model_with_response_stream(modelId=MODEL, body=body("hello"), contentType="application/json")
    events = [json.loads(e["chunk"]["bytes"]) for e in r["body"] if "chunk" in e]
    kinds = [e["type"] for e in events]
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    check("stream_events", kinds[0] == "message_start" and kinds[-1] == "message_stop" and "ping" not in kinds, kinds)
    check("stream_text", text == "Hello from fake-anthropic.", text)
    metrics = events[-1].get("amazon-bedrock-invocationMetrics", {})
    check("stream_metrics", metrics.get("outputTokenCount") == 3 and metrics.get("inputTokenCount", 0) > 0, metrics)

    # A mid-stream upstream error arrives as a modeled exception.
    try:
        r = c.invoke_model_with_response_stream(modelId=MODEL, body=body("[[scenario:error-midstream]] hi"))
        list(r["body"])
        check("stream_exception", False, "no exception raised")
    except ClientError as e:
        check("stream_exception", e.response["Error"]["Code"] == "serviceUnavailableException", e.response)

    # Bedrock's validation: extraneous `model`, missing anthropic_version.
    for name, bad in [
        ("refuses_model_member", body("x", model="m")),
        ("refuses_missing_version", json.dumps({"max_tokens": 5, "messages": []})),
    ]:
        try:
            c.invoke_model(modelId=MODEL, body=bad)
            check(name, False, "accepted")
        except ClientError as e:
            check(name, e.response["Error"]["Code"] == "ValidationException"
                  and e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response["Error"])

    # Upstream errors map to Bedrock errors.
    try:
        c.invoke_model(modelId=MODEL, body=body("[[scenario:status-429]] x"))
        check("maps_429", False, "accepted")
    except ClientError as e:
        check("maps_429", e.response["Error"]["Code"] == "ThrottlingException", e.response["Error"])

    # CountTokens: base model id, the invoke body as a blob.
    base = MODEL.split(".", 1)[1]
    r = c.count_tokens(modelId=base, input={"invokeModel": {"body": body("count me").encode()}})
    check("count_tokens", isinstance(r.get("inputTokens"), int) and r["inputTokens"] > 0, r)
    try:
        c.count_tokens(modelId=MODEL, input={"invokeModel": {"body": body("count me").encode()}})
        check("count_tokens_refuses_profile", False, "accepted")
    except ClientError as e:
        check("count_tokens_refuses_profile", e.response["Error"]["Code"] == "ValidationException", e.response["Error"])

    # A wrong secret, an unknown key id.
    for name, key, secret, code in [
        ("wrong_secret_refused", args.access_key_id, "not-the-secret", "InvalidSignatureException"),
        ("unknown_key_refused", "AKIAUNKNOWN000000000", args.secret_access_key, "UnrecognizedClientException"),
    ]:
        try:
            client(args, key, secret).invoke_model(modelId=MODEL, body=body("x"))
            check(name, False, "accepted")
        except ClientError as e:
            check(name, e.response["Error"]["Code"] == code
                  and e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.response["Error"])

    # Temporary credentials from STS web identity, then the container endpoint.
    if args.web_identity_token:
        sts = boto3.client("sts", endpoint_url=args.endpoint.rstrip("/") + "/sts/", region_name=args.region,
                           aws_access_key_id="unused", aws_secret_access_key="unused")
        creds = sts.assume_role_with_web_identity(
            RoleArn="arn:aws:iam::123456789012:role/tollgate", RoleSessionName="selftest",
            WebIdentityToken=args.web_identity_token)["Credentials"]
        tc = client(args, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
        msg = json.loads(tc.invoke_model(modelId=MODEL, body=body("hi"))["body"].read())
        check("web_identity_credentials", msg["content"][0]["text"] == "Hello from fake-anthropic.", msg)
        try:
            client(args, creds["AccessKeyId"], creds["SecretAccessKey"]).invoke_model(modelId=MODEL, body=body("x"))
            check("session_token_required", False, "accepted")
        except ClientError as e:
            check("session_token_required", e.response["Error"]["Code"] == "UnrecognizedClientException", e.response)
    if args.container_token:
        req = urllib.request.Request(args.endpoint.rstrip("/") + "/container-credentials",
                                     headers={"Authorization": args.container_token})
        creds = json.loads(urllib.request.urlopen(req).read())
        tc = client(args, creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"])
        msg = json.loads(tc.invoke_model(modelId=MODEL, body=body("hi"))["body"].read())
        check("container_credentials", msg["content"][0]["text"] == "Hello from fake-anthropic.", msg)

    report["failures"] = failures
    print(json.dumps(report))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
