//! `moto` in server mode: a real S3 implementation on loopback, from `e2e/.venv` (created by
//! `e2e/setup-python.sh` from the pinned `e2e/requirements.txt`, run here when missing).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::harness::send;

/// A running `moto_server`; killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn e2e_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e"))
}

/// Path of `moto_server`, running `e2e/setup-python.sh` first when the venv lacks it.
pub fn moto_bin() -> anyhow::Result<PathBuf> {
    let bin = e2e_dir().join(".venv/bin/moto_server");
    let status = Command::new("bash")
        .arg(e2e_dir().join("setup-python.sh"))
        .status()
        .context("running e2e/setup-python.sh")?;
    if !status.success() {
        bail!("e2e/setup-python.sh failed: {status}");
    }
    if !bin.exists() {
        bail!("{} missing after e2e/setup-python.sh", bin.display());
    }
    Ok(bin)
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    pub async fn start() -> anyhow::Result<Moto> {
        let bin = moto_bin()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning moto_server")?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if send("GET", &format!("{}/", moto.endpoint()), &[], Bytes::new())
                .await
                .is_ok()
            {
                return Ok(moto);
            }
            if Instant::now() > deadline {
                bail!("moto_server did not start");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto does not check signatures by default).
    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let r = send("PUT", &format!("{}/{bucket}", self.endpoint()), &[], Bytes::new()).await?;
        if r.status != 200 {
            bail!("create bucket: {}", r.status);
        }
        Ok(())
    }

    fn bucket(&self, bucket: &str, region: &str) -> anyhow::Result<Bucket> {
        Ok(Bucket::new(
            self.endpoint().parse()?,
            UrlStyle::Path,
            bucket.to_owned(),
            region.to_owned(),
        )?)
    }

    /// Object keys in a bucket, sorted (ListObjectsV2, signed with SigV4).
    pub async fn keys(
        &self,
        bucket: &str,
        region: &str,
        key_id: &str,
        secret: &str,
    ) -> anyhow::Result<Vec<String>> {
        let b = self.bucket(bucket, region)?;
        let creds = Credentials::new(key_id, secret);
        // ListObjectsV2 is a GET on the bucket; moto (signature checks off by default) takes the
        // presigned bucket URL with the list parameter added.
        let mut url = b.get_object(Some(&creds), "").sign(Duration::from_secs(300));
        url.query_pairs_mut().append_pair("list-type", "2");
        let r = send("GET", url.as_str(), &[], Bytes::new()).await?;
        if r.status != 200 {
            bail!("list: {}: {}", r.status, String::from_utf8_lossy(&r.body));
        }
        let xml = String::from_utf8_lossy(&r.body);
        let mut keys: Vec<String> = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// An object's bytes (GetObject, signed with SigV4).
    pub async fn get(
        &self,
        bucket: &str,
        region: &str,
        key_id: &str,
        secret: &str,
        key: &str,
    ) -> anyhow::Result<Bytes> {
        let b = self.bucket(bucket, region)?;
        let creds = Credentials::new(key_id, secret);
        let url = b.get_object(Some(&creds), key).sign(Duration::from_secs(300));
        let r = send("GET", url.as_str(), &[], Bytes::new()).await?;
        if r.status != 200 {
            bail!("get {key}: {}", r.status);
        }
        Ok(r.body)
    }

    /// Every record in every gzip JSON-lines object of a bucket, in key order.
    pub async fn records(
        &self,
        bucket: &str,
        region: &str,
        key_id: &str,
        secret: &str,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for key in self.keys(bucket, region, key_id, secret).await? {
            let gz = self.get(bucket, region, key_id, secret, &key).await?;
            let mut text = String::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_string(&mut text)
                .with_context(|| format!("{key} is not gzip"))?;
            for line in text.lines().filter(|l| !l.is_empty()) {
                out.push(serde_json::from_str(line).with_context(|| format!("{key}: bad line"))?);
            }
        }
        Ok(out)
    }
}
