//! The webhook's certificates in self-managed mode: a CA and a serving certificate it signs,
//! kept in one Secret. The plan is pure: given what the Secret holds and the time, keep it,
//! re-issue the serving certificate, or roll the CA (keeping the previous CA in the bundle
//! until the new one has been trusted for a while).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};

/// Secret data keys.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key (ECDSA P-256, PKCS#8 PEM).
pub const CA_KEY: &str = "ca.key";
/// The previous CA, still in the bundle after a CA roll.
pub const PREVIOUS_CA_CERT: &str = "ca-previous.crt";
/// The serving certificate.
pub const TLS_CERT: &str = "tls.crt";
/// The serving key.
pub const TLS_KEY: &str = "tls.key";
/// Annotation: the CA's notAfter (RFC 3339).
pub const CA_NOT_AFTER: &str = "tollgate.dev/ca-not-after";
/// Annotation: the serving certificate's notAfter (RFC 3339).
pub const CERT_NOT_AFTER: &str = "tollgate.dev/cert-not-after";
/// Annotation: the DNS names the serving certificate covers (comma-separated).
pub const CERT_DNS_NAMES: &str = "tollgate.dev/cert-dns-names";

const CA_COMMON_NAME: &str = "tollgate-webhook-ca";

/// Lifetimes and renewal margins.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// CA validity.
    pub ca: SignedDuration,
    /// Roll the CA when less than this remains.
    pub ca_renew_before: SignedDuration,
    /// Serving certificate validity.
    pub cert: SignedDuration,
    /// Re-issue the serving certificate when less than this remains.
    pub cert_renew_before: SignedDuration,
}

/// `n` days of 24 hours.
pub const fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            ca: days(3650),
            ca_renew_before: days(365),
            cert: days(365),
            cert_renew_before: days(30),
        }
    }
}

/// What the webhook Secret holds (data and the annotations above).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Data: PEM text by key.
    pub data: BTreeMap<String, String>,
    /// The Secret's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// What to do with the stored certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Valid for long enough: serve them.
    Keep,
    /// Issue a new serving certificate from the stored CA.
    Reissue,
    /// Make a new CA (the old one, if still valid, stays in the bundle) and a serving cert.
    NewCa,
}

fn not_after(stored: &Stored, key: &str) -> Option<Timestamp> {
    stored.annotations.get(key)?.parse().ok()
}

fn has(stored: &Stored, keys: &[&str]) -> bool {
    keys.iter()
        .all(|k| stored.data.get(*k).is_some_and(|v| !v.trim().is_empty()))
}

/// Decides, from the Secret's content, the time and the wanted DNS names.
pub fn plan(stored: &Stored, now: Timestamp, dns_names: &[String], life: Lifetimes) -> Plan {
    // Missing or unparsable expiry counts as expiring.
    let within = |t: Option<Timestamp>, margin: SignedDuration| match t {
        Some(t) => match now.checked_add(margin) {
            Ok(limit) => t <= limit,
            Err(_) => true,
        },
        None => true,
    };
    if !has(stored, &[CA_CERT, CA_KEY]) || within(not_after(stored, CA_NOT_AFTER), life.ca_renew_before) {
        return Plan::NewCa;
    }
    let names = stored
        .annotations
        .get(CERT_DNS_NAMES)
        .map(String::as_str)
        .unwrap_or("");
    if !has(stored, &[TLS_CERT, TLS_KEY])
        || names != dns_names.join(",")
        || within(not_after(stored, CERT_NOT_AFTER), life.cert_renew_before)
    {
        return Plan::Reissue;
    }
    Plan::Keep
}

/// A certificate error (generation or a stored key that does not parse).
#[derive(Debug, thiserror::Error)]
#[error("webhook certificates: {0}")]
pub struct CertError(String);

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        Self(e.to_string())
    }
}

/// rcgen takes calendar dates; validity starts a day early to absorb clock skew.
fn validity(
    params: &mut CertificateParams,
    now: Timestamp,
    life: SignedDuration,
) -> Result<Timestamp, CertError> {
    let err = |e: jiff::Error| CertError(e.to_string());
    let utc_date = |t: Timestamp| t.to_zoned(jiff::tz::TimeZone::UTC).date();
    // Month and day are 1..=12 and 1..=31 by construction.
    let ymd = |d: jiff::civil::Date| date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8);
    let start = utc_date(now.checked_sub(days(1)).map_err(err)?);
    let end = utc_date(now.checked_add(life).map_err(err)?);
    params.not_before = ymd(start);
    params.not_after = ymd(end);
    // The notAfter rcgen writes: midnight UTC of that date.
    end.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(err)
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "Tollgate");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Carries out a plan: returns the new Secret content (or the stored one for [`Plan::Keep`]).
pub fn execute(
    plan: Plan,
    stored: &Stored,
    now: Timestamp,
    dns_names: &[String],
    life: Lifetimes,
) -> Result<Stored, CertError> {
    let mut out = stored.clone();
    if plan == Plan::Keep {
        return Ok(out);
    }
    if plan == Plan::NewCa {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        let ca_not_after = validity(&mut params, now, life.ca)?;
        let cert = params.self_signed(&key)?;
        // Keep the outgoing CA in the bundle while it is valid: pods' API servers may still
        // have the old bundle when the new certificate is first served.
        match (stored.data.get(CA_CERT), not_after(stored, CA_NOT_AFTER)) {
            (Some(old), Some(t)) if t > now => {
                out.data.insert(PREVIOUS_CA_CERT.into(), old.clone());
            }
            _ => {
                out.data.remove(PREVIOUS_CA_CERT);
            }
        }
        out.data.insert(CA_CERT.into(), cert.pem());
        out.data.insert(CA_KEY.into(), key.serialize_pem());
        out.annotations
            .insert(CA_NOT_AFTER.into(), ca_not_after.to_string());
    }
    let ca_key_pem = out.data.get(CA_KEY).cloned().unwrap_or_default();
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| CertError(format!("the stored CA key: {e}")))?;
    // The issuer is rebuilt from the fixed CA name and its key: the signature and authority
    // key identifier depend on nothing else, so no certificate parser is needed.
    let issuer = Issuer::new(ca_params(), &ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert_not_after = validity(&mut params, now, life.cert)?;
    let cert = params.signed_by(&key, &issuer)?;
    out.data.insert(TLS_CERT.into(), cert.pem());
    out.data.insert(TLS_KEY.into(), key.serialize_pem());
    out.annotations
        .insert(CERT_NOT_AFTER.into(), cert_not_after.to_string());
    out.annotations.insert(CERT_DNS_NAMES.into(), dns_names.join(","));
    Ok(out)
}

/// The `caBundle` the webhook configuration needs: the current CA, then the previous one.
pub fn ca_bundle(stored: &Stored) -> String {
    [CA_CERT, PREVIOUS_CA_CERT]
        .iter()
        .filter_map(|k| stored.data.get(*k))
        .map(|pem| pem.trim_end().to_owned() + "\n")
        .collect()
}

/// The DNS names of the webhook Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        service_dns_names("tollgate-webhook", "tollgate-system")
    }

    fn fresh(now: Timestamp) -> Stored {
        execute(
            Plan::NewCa,
            &Stored::default(),
            now,
            &names(),
            Lifetimes::default(),
        )
        .unwrap()
    }

    #[test]
    fn plans() {
        let now: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let life = Lifetimes::default();
        let s = fresh(now);
        assert_eq!(plan(&Stored::default(), now, &names(), life), Plan::NewCa);
        assert_eq!(plan(&s, now, &names(), life), Plan::Keep);
        // 340 days later the serving cert has < 30 days left; the CA is fine.
        let later = now + days(340);
        assert_eq!(plan(&s, later, &names(), life), Plan::Reissue);
        // 9.5 years later the CA rolls.
        let much_later = now + days(3470);
        assert_eq!(plan(&s, much_later, &names(), life), Plan::NewCa);
        // A renamed Service needs a new certificate.
        let other = service_dns_names("tg-webhook", "tollgate-system");
        assert_eq!(plan(&s, now, &other, life), Plan::Reissue);
        // Missing or blank data is regenerated.
        let mut broken = s.clone();
        broken.data.insert(TLS_KEY.into(), " ".into());
        assert_eq!(plan(&broken, now, &names(), life), Plan::Reissue);
        broken.data.remove(CA_KEY);
        assert_eq!(plan(&broken, now, &names(), life), Plan::NewCa);
        // An unparsable expiry annotation is treated as expired.
        let mut odd = s.clone();
        odd.annotations.insert(CERT_NOT_AFTER.into(), "soon".into());
        assert_eq!(plan(&odd, now, &names(), life), Plan::Reissue);
    }

    #[test]
    fn reissue_keeps_the_ca_and_a_ca_roll_keeps_the_previous_in_the_bundle() {
        let now: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let s = fresh(now);
        assert_eq!(ca_bundle(&s).matches("BEGIN CERTIFICATE").count(), 1);
        let r = execute(Plan::Reissue, &s, now, &names(), Lifetimes::default()).unwrap();
        assert_eq!(r.data[CA_CERT], s.data[CA_CERT]);
        assert_ne!(r.data[TLS_CERT], s.data[TLS_CERT]);
        assert_eq!(ca_bundle(&r), ca_bundle(&s), "reissue leaves caBundle unchanged");
        let rolled = execute(Plan::NewCa, &r, now, &names(), Lifetimes::default()).unwrap();
        assert_ne!(rolled.data[CA_CERT], r.data[CA_CERT]);
        assert_eq!(rolled.data[PREVIOUS_CA_CERT], r.data[CA_CERT]);
        assert_eq!(ca_bundle(&rolled).matches("BEGIN CERTIFICATE").count(), 2);
        let expiry: Timestamp = rolled.annotations[CERT_NOT_AFTER].parse().unwrap();
        let days = (expiry - now).get_seconds() / 86_400;
        assert!((364..=366).contains(&days), "{days}");
    }
}
