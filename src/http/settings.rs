//! The HTTP client's settings, owned here and filled in by `config` (CA bundle, proxies,
//! timeouts, retries).

use std::fmt;
use std::time::Duration;

use url::Url;

/// Settings of the one HTTP client ([`super::HttpClient::new`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SCALR_AGENT_CA_CERT`: extra trust anchors, added to the system and built-in roots.
    pub ca_bundle: Option<CaBundle>,
    pub http_proxy: Option<Url>,
    pub https_proxy: Option<Url>,
    pub no_proxy: Option<String>,
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_retries: u32,
    pub initial_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ca_bundle: None,
            http_proxy: None,
            https_proxy: None,
            no_proxy: None,
            read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

/// A PEM bundle of extra trust anchors that holds at least one certificate the TLS stack
/// accepts; built only by [`CaBundle::from_pem`].
#[derive(Clone)]
pub struct CaBundle {
    pem: Vec<u8>,
    certificates: usize,
}

impl CaBundle {
    /// Checks a PEM bundle: `None` when it holds no certificate the TLS stack can parse.
    pub fn from_pem(pem: Vec<u8>) -> Option<CaBundle> {
        let certificates = String::from_utf8_lossy(&pem)
            .matches("-----BEGIN CERTIFICATE-----")
            .count();
        if certificates == 0 || reqwest::Certificate::from_pem_bundle(&pem).is_err() {
            return None;
        }
        Some(CaBundle { pem, certificates })
    }

    /// The bundle as given (PEM text).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// How many certificates it holds.
    pub fn certificates(&self) -> usize {
        self.certificates
    }
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({} certificates)", self.certificates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_needs_a_certificate() {
        assert!(CaBundle::from_pem(b"not pem".to_vec()).is_none());
        // One public root of the machine's ca-certificates.
        let path = std::fs::read_dir("/usr/share/ca-certificates/mozilla")
            .expect("ca-certificates is installed")
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "crt"))
            .unwrap();
        let pem = std::fs::read(path).unwrap();
        let b = CaBundle::from_pem(pem.clone()).unwrap();
        assert_eq!((b.certificates(), b.pem()), (1, pem.as_slice()));
        assert_eq!(format!("{b:?}"), "CaBundle(1 certificates)");
    }
}
