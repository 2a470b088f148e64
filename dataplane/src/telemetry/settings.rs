//! Whether and how to export traces, from the standard `OTEL_*` environment variables
//! (a pure function of a variable lookup, so it is tested without touching the process).
//!
//! Tracing is on when `OTEL_TRACES_EXPORTER=otlp`, or when it is unset and an OTLP endpoint
//! is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`); it is off with
//! `OTEL_TRACES_EXPORTER=none`, `OTEL_SDK_DISABLED=true`, or nothing configured. The exporter
//! itself reads the endpoint, `OTEL_EXPORTER_OTLP[_TRACES]_HEADERS` and compression; the SDK
//! reads `OTEL_TRACES_SAMPLER[_ARG]` and `OTEL_BSP_*`; the resource reads
//! `OTEL_RESOURCE_ATTRIBUTES`.

use anyhow::bail;

/// The exporter's default endpoint (OTLP/HTTP), when only `OTEL_TRACES_EXPORTER=otlp` is set.
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";

/// What [`super::init`] needs beyond what the OTel crates read themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where traces go, for the startup log line (the exporter resolves it again).
    pub endpoint: String,
    /// `OTEL_SERVICE_NAME`, when set.
    pub service_name: Option<String>,
}

impl Settings {
    /// The settings when tracing is on, `None` when off, or why the configuration cannot be
    /// served (an unsupported exporter or protocol: refused, never silently ignored).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Settings>> {
        let var = |k: &str| var(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| format!("{}/v1/traces", e.trim_end_matches('/')))
        });
        match var("OTEL_TRACES_EXPORTER").as_deref() {
            Some("none") => return Ok(None),
            None if endpoint.is_none() => return Ok(None),
            None | Some("otlp") => {}
            Some(other) => bail!(
                "OTEL_TRACES_EXPORTER={other:?} is not supported by tollgate-proxy: use \"otlp\" (OTLP/HTTP) or \"none\""
            ),
        }
        let protocol =
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        match protocol.as_deref() {
            None | Some("http/protobuf") => {}
            Some("grpc") => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: tollgate-proxy exports OTLP over HTTP only (http/protobuf, \
                 usually port 4318); OTLP/gRPC is not built in. Set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
                 and point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's OTLP/HTTP receiver"
            ),
            Some(other) => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported by tollgate-proxy: use http/protobuf"
            ),
        }
        Ok(Some(Settings {
            endpoint: endpoint.unwrap_or_else(|| format!("{DEFAULT_ENDPOINT}/v1/traces")),
            service_name: var("OTEL_SERVICE_NAME"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<Option<Settings>> {
        Settings::from_env(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn off_unless_configured() {
        assert_eq!(from(&[]).unwrap(), None);
        assert_eq!(from(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), None);
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        assert!(from(&on).unwrap().is_some());
        for off in [("OTEL_TRACES_EXPORTER", "none"), ("OTEL_SDK_DISABLED", "true")] {
            assert_eq!(from(&[on[0], off]).unwrap(), None, "{off:?}");
        }
    }

    #[test]
    fn endpoints_resolve_as_the_exporter_does() {
        let s = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        let s = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"),
            ("OTEL_SERVICE_NAME", "edge"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://t:1/x");
        assert_eq!(s.service_name.as_deref(), Some("edge"));
        let s = from(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://localhost:4318/v1/traces");
    }

    #[test]
    fn grpc_and_other_exporters_are_refused_by_name() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        let err = from(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("gRPC is not built in"), "{err}");
        let err = from(&[on, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")]).unwrap_err();
        assert!(err.to_string().contains("http/json"), "{err}");
        let err = from(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(err.to_string().contains("zipkin"), "{err}");
        // Tracing off: a protocol setting meant for other signals is nobody's business here.
        assert_eq!(from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap(), None);
    }
}
