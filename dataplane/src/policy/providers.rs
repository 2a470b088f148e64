//! Compiling a provider of the document into its wire format with its credentials: the
//! static secrets are read now (a reload picks up a rotated Secret), the rest (token files,
//! metadata servers, STS) is fetched by the provider module when a request needs it.

use std::sync::Arc;

use super::document::{AwsCredentials, AzureCredentials, Provider, ProviderKind};
use super::snapshot::{ProviderEntry, read_credential};
use crate::providers::bedrock::{AwsAuth, Bedrock, BedrockConfig};
use crate::providers::foundry::{AzureAuth, Foundry, FoundryConfig};
use crate::providers::vertex::{GcpAuth, Vertex, VertexConfig};
use crate::providers::{AnthropicApi, GeminiApi, OpenAiApi, ProviderAuth, Wire};
use crate::secret::{CredentialReader, SystemCredentials};

/// Compiles `p`, reading its static credentials with `creds`.
pub fn compile_provider(p: &Provider, creds: &dyn CredentialReader) -> ProviderEntry {
    ProviderEntry {
        id: p.id.clone(),
        kind: p.kind,
        region: p.region.clone(),
        wire: wire(p, creds).unwrap_or_else(|why| unusable(p, why)),
        retry_budget: p.retry_budget.unwrap_or_default(),
        timeouts: p.timeouts.clone(),
    }
}

/// A provider whose credential cannot be read: every call fails with `why`.
fn unusable(p: &Provider, why: String) -> Wire {
    Wire::Anthropic(AnthropicApi {
        id: p.id.clone(),
        endpoint: p.endpoint.trim_end_matches('/').to_owned(),
        auth: ProviderAuth::Unreadable(why),
    })
}

/// Runtime reads (token files, the AWS and Google environment) go to the real system.
fn runtime_reader() -> Arc<dyn CredentialReader + Send + Sync> {
    Arc::new(SystemCredentials)
}

fn endpoint(p: &Provider) -> Option<String> {
    (!p.endpoint.is_empty()).then(|| p.endpoint.trim_end_matches('/').to_owned())
}

fn wire(p: &Provider, creds: &dyn CredentialReader) -> Result<Wire, String> {
    let secret = |src| read_credential(Some(src), creds);
    Ok(match p.kind {
        ProviderKind::Tollgate => Wire::Anthropic(AnthropicApi {
            id: p.id.clone(),
            endpoint: p.endpoint.trim_end_matches('/').to_owned(),
            auth: ProviderAuth::ForwardClientKey,
        }),
        ProviderKind::Vertex => {
            let auth = match (
                &p.credential,
                p.gcp.as_ref().and_then(|g| g.service_account_key.as_ref()),
            ) {
                (Some(token), _) => GcpAuth::AccessToken(secret(token)?),
                (None, Some(key)) => GcpAuth::ServiceAccountKey(secret(key)?),
                (None, None) => GcpAuth::Environment,
            };
            let config = VertexConfig {
                project: p.project.clone().unwrap_or_default(),
                region: p.region.clone().unwrap_or_default(),
                endpoint: endpoint(p),
                auth,
            };
            Wire::Vertex(Vertex::new(config, runtime_reader()))
        }
        ProviderKind::Foundry => {
            let auth = match (&p.credential, &p.azure) {
                (_, Some(az)) => azure_auth(az, creds)?,
                (Some(key), None) => AzureAuth::ApiKey(secret(key)?),
                (None, None) => return Err("no credential configured".into()),
            };
            let config = FoundryConfig {
                endpoint: p.endpoint.trim_end_matches('/').to_owned(),
                auth,
            };
            Wire::Foundry(Foundry::new(config, runtime_reader()))
        }
        ProviderKind::Bedrock => {
            let auth = match (&p.credential, &p.aws) {
                (Some(key), _) => AwsAuth::ApiKey(secret(key)?),
                (None, Some(aws)) => aws_auth(aws, creds)?,
                (None, None) => AwsAuth::Environment,
            };
            let config = BedrockConfig {
                region: p.region.clone().unwrap_or_default(),
                endpoint: endpoint(p),
                auth,
            };
            Wire::Bedrock(Bedrock::new(config, runtime_reader()))
        }
        ProviderKind::Openai => Wire::OpenAi(OpenAiApi {
            id: p.id.clone(),
            endpoint: p.endpoint.trim_end_matches('/').to_owned(),
            key: read_credential(p.credential.as_ref(), creds)?,
        }),
        ProviderKind::Gemini => Wire::Gemini(GeminiApi {
            id: p.id.clone(),
            endpoint: p.endpoint.trim_end_matches('/').to_owned(),
            key: read_credential(p.credential.as_ref(), creds)?,
        }),
        ProviderKind::Anthropic => {
            let key = read_credential(p.credential.as_ref(), creds)?;
            Wire::Anthropic(AnthropicApi {
                id: p.id.clone(),
                endpoint: p.endpoint.trim_end_matches('/').to_owned(),
                auth: ProviderAuth::Key(key),
            })
        }
    })
}

fn aws_auth(aws: &AwsCredentials, creds: &dyn CredentialReader) -> Result<AwsAuth, String> {
    if let (Some(id), Some(key)) = (&aws.access_key_id, &aws.secret_access_key) {
        return Ok(AwsAuth::Static {
            access_key_id: read_credential(Some(id), creds)?,
            secret_access_key: read_credential(Some(key), creds)?,
            session_token: match &aws.session_token {
                Some(t) => Some(read_credential(Some(t), creds)?),
                None => None,
            },
        });
    }
    if let Some(w) = &aws.web_identity {
        return Ok(AwsAuth::WebIdentity {
            role_arn: w.role_arn.clone(),
            token_file: w.token_file.clone(),
            session_name: w.session_name.clone(),
            sts_endpoint: w.sts_endpoint.clone(),
        });
    }
    if let Some(c) = &aws.container {
        return Ok(AwsAuth::Container {
            full_uri: c.uri.clone(),
            token_file: c.token_file.clone(),
        });
    }
    Err("aws: no credential form set".into())
}

fn azure_auth(az: &AzureCredentials, creds: &dyn CredentialReader) -> Result<AzureAuth, String> {
    let Some(src) = &az.client_secret else {
        return Ok(AzureAuth::WorkloadIdentity {
            tenant_id: az.tenant_id.clone(),
            client_id: az.client_id.clone(),
            token_file: az.federated_token_file.clone(),
            authority_host: az.authority_host.clone(),
        });
    };
    let from_env = |value: &Option<String>, var: &str| {
        value.clone().or_else(|| creds.env(var)).ok_or_else(|| {
            format!(
                "azure: set {} or the environment variable {var}",
                var.to_lowercase()
            )
        })
    };
    Ok(AzureAuth::ClientSecret {
        tenant_id: from_env(&az.tenant_id, "AZURE_TENANT_ID")?,
        client_id: from_env(&az.client_id, "AZURE_CLIENT_ID")?,
        client_secret: read_credential(Some(src), creds)?,
        authority_host: az.authority_host.clone(),
    })
}
