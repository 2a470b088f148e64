//! `ModelProvider`: an upstream model API the proxy forwards to, and `ModelRoute`: which
//! requested model names go to which providers.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::bounds;

use super::common::{Condition, CredentialRef};

/// A model provider. Cluster-scoped; its name is the provider id routes refer to.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ModelProvider",
    doc = "A model provider API tollgate-proxy forwards to.",
    plural = "modelproviders",
    shortname = "tgprovider",
    category = "tollgate",
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.endpoint) || self.kind == 'bedrock' || self.kind == 'vertex'").message("set endpoint: kinds anthropic, foundry, openai and gemini need it (only bedrock and vertex derive it from the region)"))]
#[x_kube(validation = Rule::new("has(self.region) || !(self.kind == 'bedrock' || self.kind == 'vertex')").message("set region: kinds bedrock and vertex need it (e.g. us-east-1, or us-east5 or global on vertex)"))]
#[x_kube(validation = Rule::new("has(self.project) == (self.kind == 'vertex')").message("project is required for kind vertex and only allowed there: set it to the Google Cloud project id, or remove it"))]
#[x_kube(validation = Rule::new("!has(self.aws) || self.kind == 'bedrock'").message("aws is only for kind bedrock: remove it"))]
#[x_kube(validation = Rule::new("!has(self.gcp) || self.kind == 'vertex'").message("gcp is only for kind vertex: remove it"))]
#[x_kube(validation = Rule::new("!has(self.azure) || self.kind == 'foundry'").message("azure is only for kind foundry: remove it"))]
#[x_kube(validation = Rule::new("!has(self.credential) || !(has(self.aws) || has(self.gcp) || has(self.azure))").message("set either credential or the cloud credentials (aws, gcp, azure), not both"))]
pub struct ModelProviderSpec {
    /// Which API the provider speaks: `anthropic` (the Anthropic API), `bedrock` (AWS
    /// Bedrock), `vertex` (Google Vertex AI: Claude and Gemini models), `foundry` (Azure AI
    /// Foundry), `openai` (the OpenAI API or a compatible one: Codex CLI, Chat Completions
    /// clients) or `gemini` (the Gemini API: Gemini CLI), the kinds tollgate-proxy implements.
    pub kind: ProviderKind,
    /// Base URL, e.g. `https://api.anthropic.com` (`http://` only for local tests). Required
    /// for `anthropic` and `foundry`; optional for `bedrock`
    /// (`https://bedrock-runtime.{region}.amazonaws.com`) and `vertex`
    /// (`https://{region}-aiplatform.googleapis.com`, or `https://aiplatform.googleapis.com`
    /// for region `global`), e.g. for a VPC endpoint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http(s) URL"))]
    #[schemars(length(max = bounds::URL))]
    pub endpoint: String,
    /// Cloud region: required for `bedrock` (`us-east-1`) and `vertex` (`us-east5`,
    /// `global`). Lowercase letters, digits and `-`, as it becomes part of a host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = bounds::CLOUD_LABEL), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub region: Option<String>,
    /// Google Cloud project id: required for `vertex`, and only allowed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = bounds::CLOUD_LABEL), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub project: Option<String>,
    /// A single secret credential (copied into the credentials Secret, never into a
    /// ConfigMap): the API key of `anthropic` and `foundry`, a Bedrock API key (sent as a
    /// Bearer token) for `bedrock`, a static OAuth2 access token for `vertex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
    /// AWS credentials of a `bedrock` provider: static keys, web identity (EKS IRSA) or
    /// container credentials (EKS Pod Identity). Without it (and without `credential`), the
    /// standard AWS environment chain of the proxy's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsCredentials>,
    /// Google credentials of a `vertex` provider. Without it (and without `credential`),
    /// Application Default Credentials (GKE Workload Identity through the metadata server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpCredentials>,
    /// Microsoft Entra ID credentials of a `foundry` provider; without it, `credential` is
    /// the `api-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureCredentials>,
    /// How many requests may fall back from this provider to a route's next target
    /// (default 20% of its requests, plus 5 per second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Timeouts for calls to this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

impl ModelProviderSpec {
    /// Every credential the provider references: `credential` and the cloud credentials'
    /// secrets (AWS keys, the Google service-account key, the Entra client secret).
    pub fn credential_refs(&self) -> impl Iterator<Item = &CredentialRef> {
        let aws = self.aws.iter().flat_map(|a| {
            a.access_key_id
                .iter()
                .chain(&a.secret_access_key)
                .chain(&a.session_token)
        });
        let gcp = self.gcp.iter().map(|g| &g.service_account_key);
        let azure = self.azure.iter().filter_map(|a| a.client_secret.as_ref());
        self.credential.iter().chain(aws).chain(gcp).chain(azure)
    }
}

/// AWS credentials: exactly one of static keys, web identity or container credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.accessKeyId) || has(self.secretAccessKey) ? 1 : 0) + (has(self.webIdentity) ? 1 : 0) + (has(self.container) ? 1 : 0) == 1").message("set exactly one of accessKeyId with secretAccessKey, webIdentity or container (or remove aws for the standard AWS environment chain)"))]
#[x_kube(validation = Rule::new("has(self.accessKeyId) == has(self.secretAccessKey)").message("accessKeyId and secretAccessKey go together: set both"))]
#[x_kube(validation = Rule::new("!has(self.sessionToken) || has(self.accessKeyId)").message("sessionToken goes with accessKeyId and secretAccessKey: set them, or remove sessionToken"))]
pub struct AwsCredentials {
    /// Static access key id (with `secretAccessKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<CredentialRef>,
    /// Static secret access key (with `accessKeyId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<CredentialRef>,
    /// Session token of temporary static keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<CredentialRef>,
    /// Web identity federation (EKS IRSA): STS `AssumeRoleWithWebIdentity` with the
    /// projected service-account token, refreshed before the credentials expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<AwsWebIdentity>,
    /// Container credentials (EKS Pod Identity, ECS): an HTTP endpoint issuing temporary keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<AwsContainerCredentials>,
}

/// STS web identity federation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsWebIdentity {
    /// The role to assume, e.g. `arn:aws:iam::123456789012:role/tollgate`.
    #[x_kube(validation = Rule::new("self.startsWith('arn:')").message("must be an IAM role ARN, e.g. arn:aws:iam::123456789012:role/tollgate"))]
    #[schemars(length(max = bounds::ARN))]
    pub role_arn: String,
    /// The projected service-account token file in the proxy's container (EKS IRSA:
    /// `/var/run/secrets/eks.amazonaws.com/serviceaccount/token`).
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute file path"))]
    #[schemars(length(max = bounds::FILE_PATH))]
    pub token_file: String,
    /// Role session name (default `tollgate-proxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = bounds::AWS_SESSION_NAME), regex(pattern = r"^[\w+=,.@-]+$"))]
    pub session_name: Option<String>,
    /// STS endpoint (default `https://sts.{region}.amazonaws.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http(s) URL"))]
    #[schemars(length(max = bounds::URL))]
    pub sts_endpoint: Option<String>,
}

/// A container credentials endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsContainerCredentials {
    /// The endpoint (EKS Pod Identity: `http://169.254.170.23/v1/credentials`).
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http(s) URL"))]
    #[schemars(length(max = bounds::URL))]
    pub uri: String,
    /// File holding the authorization token sent to it (EKS Pod Identity:
    /// `/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute file path"))]
    #[schemars(length(max = bounds::FILE_PATH))]
    pub token_file: Option<String>,
}

/// Google credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpCredentials {
    /// A service-account JSON key; access tokens are minted from it.
    pub service_account_key: CredentialRef,
}

/// Microsoft Entra ID credentials: a client secret, else workload identity (a federated
/// token file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.clientSecret) && has(self.federatedTokenFile))").message("set clientSecret or federatedTokenFile (workload identity), not both"))]
pub struct AzureCredentials {
    /// Directory (tenant) id; default `AZURE_TENANT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = bounds::ENTRA_ID))]
    pub tenant_id: Option<String>,
    /// Application (client) id; default `AZURE_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = bounds::ENTRA_ID))]
    pub client_id: Option<String>,
    /// Client secret; without it, workload identity is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<CredentialRef>,
    /// Federated token file of workload identity; default `AZURE_FEDERATED_TOKEN_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute file path"))]
    #[schemars(length(max = bounds::FILE_PATH))]
    pub federated_token_file: Option<String>,
    /// Entra authority (default `AZURE_AUTHORITY_HOST`, else
    /// `https://login.microsoftonline.com/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http(s) URL"))]
    #[schemars(length(max = bounds::URL))]
    pub authority_host: Option<String>,
}

/// The share of a provider's requests that may fall back to a route's next target: every
/// request sent to the provider earns `percent`/100 of a fallback, and `minPerSecond`
/// fallbacks are always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Fallbacks allowed per 100 requests, 0 to 100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<u32>,
    /// Fallbacks always allowed per second, whatever the traffic (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000))]
    pub min_per_second: Option<u32>,
}

/// Provider API kinds: exactly those tollgate-proxy forwards to (`anthropic`, `bedrock`,
/// `vertex`, `foundry`)
/// (`tollgate_dataplane::policy::validate::SUPPORTED_PROVIDER_KINDS`, a test keeps them equal),
/// except `tollgate`, the gateway as a credential-free sidecar's provider, which only the
/// operator writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProviderKind {
    /// The Anthropic Messages API.
    #[default]
    Anthropic,
    /// AWS Bedrock (InvokeModel).
    Bedrock,
    /// Google Vertex AI (rawPredict).
    Vertex,
    /// Azure AI Foundry.
    Foundry,
    /// The OpenAI API or an OpenAI-compatible one (Responses, Chat Completions).
    Openai,
    /// The Gemini API.
    Gemini,
    /// A kind the schema does not admit:
    /// such an object stored earlier reads as this and is reported `UnsupportedKind`, rather
    /// than failing the watch of every ModelProvider.
    #[serde(other)]
    #[schemars(skip)]
    Unsupported,
}

impl ProviderKind {
    /// The kind the policy document names; `None` for [`ProviderKind::Unsupported`].
    pub fn document_kind(self) -> Option<tollgate_dataplane::policy::document::ProviderKind> {
        use tollgate_dataplane::policy::document::ProviderKind as Doc;
        match self {
            ProviderKind::Anthropic => Some(Doc::Anthropic),
            ProviderKind::Bedrock => Some(Doc::Bedrock),
            ProviderKind::Vertex => Some(Doc::Vertex),
            ProviderKind::Foundry => Some(Doc::Foundry),
            ProviderKind::Openai => Some(Doc::Openai),
            ProviderKind::Gemini => Some(Doc::Gemini),
            ProviderKind::Unsupported => None,
        }
    }
}

/// Provider call timeouts in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Time allowed until the response headers arrive (default 600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub response_headers_ms: Option<u64>,
    /// Longest silence allowed inside a streamed body (default 300000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub stream_idle_ms: Option<u64>,
}

/// A route: requests for models matching `match` go to the first target (by `priority`,
/// weighted among equals), later targets are fallbacks. Cluster-scoped; routes are tried by ascending `priority`, then by name.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ModelRoute",
    doc = "Maps requested model names (exact or glob) to ordered ModelProvider targets.",
    plural = "modelroutes",
    shortname = "tgroute",
    category = "tollgate",
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Match","type":"string","jsonPath":".spec.match"}"#,
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.targets[0].provider"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.targets[0].model"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelRouteSpec {
    /// The requested model name served: exact (`gw-opus`) or a glob (`claude-*`).
    #[serde(rename = "match")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    #[schemars(length(max = bounds::MODEL))]
    pub match_: String,
    /// Lower priorities are tried first (default 100).
    #[serde(default = "default_priority")]
    #[schemars(range(min = i32::MIN, max = i32::MAX))]
    pub priority: i32,
    /// Ordered targets; the first is used, later ones are fallbacks.
    #[x_kube(validation = Rule::new("size(self) > 0").message("needs at least one target"))]
    #[schemars(length(max = bounds::ROUTE_TARGETS), extend("x-kubernetes-list-type" = "atomic"))]
    pub targets: Vec<RouteTarget>,
}

fn default_priority() -> i32 {
    100
}

/// One target of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTarget {
    /// The ModelProvider's name.
    #[schemars(length(max = bounds::NAME))]
    pub provider: String,
    /// The upstream model id; absent keeps the requested name. The provider's own id:
    /// `us.anthropic.claude-sonnet-4-5-20250929-v1:0` on Bedrock,
    /// `claude-sonnet-4-5@20250929` on Vertex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::MODEL))]
    pub model: Option<String>,
    /// Targets are tried by ascending priority (default: the target's position in the
    /// list, so a plain list is an ordered fallback chain). Targets of equal priority share
    /// the load by `weight`; the others of the group are the next fallbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = i32::MAX))]
    pub priority: Option<i32>,
    /// Relative share of the load among targets of equal priority, 1 to 10000 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub weight: Option<i32>,
}

/// The status of resources that only report readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the resource is in the compiled policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::CONDITIONS), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
