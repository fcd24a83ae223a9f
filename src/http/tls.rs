//! Which servers HTTPS requests trust: the system's root certificates, found as OpenSSL and
//! libcurl find them (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the distribution's bundle such as
//! `/etc/ssl/certs/ca-certificates.crt`), plus the PEM file named by `pulse.http_ca_file`. When
//! the system has no root certificates at all, the Mozilla roots compiled into pg_pulse
//! (webpki-roots) are used instead. Pure Rust.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

/// The trust store of the HTTP client, or why HTTPS requests cannot be sent.
#[derive(Clone)]
pub struct Trust {
    /// Err: the CA file could not be used; HTTPS requests fail with this message (not sent).
    pub config: Result<Arc<rustls::ClientConfig>, String>,
    /// The CA file and what it held when loaded (the bytes, or the read error): a reload that
    /// finds the same keeps the connections.
    source: (Option<String>, Result<Vec<u8>, String>),
    /// Root certificates taken from the system (0: the compiled-in roots are used).
    pub system_roots: usize,
    /// Certificates taken from the CA file.
    pub extra_roots: usize,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("ok", &self.config.is_ok())
            .field("system_roots", &self.system_roots)
            .field("extra_roots", &self.extra_roots)
            .finish()
    }
}

fn read_source(ca_file: Option<&str>) -> (Option<String>, Result<Vec<u8>, String>) {
    let path = ca_file.map(str::trim).filter(|p| !p.is_empty());
    let bytes = match path {
        None => Ok(Vec::new()),
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot be read: {e}")),
    };
    (path.map(str::to_string), bytes)
}

/// The system's root certificates; the compiled-in ones when the system has none.
fn system_roots() -> (rustls::RootCertStore, usize) {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    (roots, added)
}

impl Trust {
    /// Loads the system's roots and `ca_file` (None or empty: none).
    pub fn load(ca_file: Option<&str>) -> Trust {
        let source = read_source(ca_file);
        let (mut roots, system) = system_roots();
        let mut extra = 0;
        let config = (|| {
            let (Some(path), bytes) = &source else {
                return build(roots);
            };
            let what = |e: String| format!("pulse.http_ca_file \"{path}\" {e}");
            let bytes = bytes.as_ref().map_err(|e| what(e.clone()))?;
            for cert in CertificateDer::pem_slice_iter(bytes) {
                let cert = cert.map_err(|e| what(format!("is not a PEM file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| what(format!("holds a certificate that cannot be used: {e}")))?;
                extra += 1;
            }
            if extra == 0 {
                return Err(what(
                    "holds no certificate (-----BEGIN CERTIFICATE----- blocks in PEM)".into(),
                ));
            }
            build(roots)
        })();
        Trust {
            config,
            source,
            system_roots: system,
            extra_roots: extra,
        }
    }

    /// Whether loading `ca_file` now would find what this trust store was built from.
    pub fn is_current(&self, ca_file: Option<&str>) -> bool {
        read_source(ca_file) == self.source
    }

    /// The problem HTTPS requests fail with, if any.
    pub fn problem(&self) -> Option<&str> {
        self.config.as_ref().err().map(String::as_str)
    }
}

fn build(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_roots_without_a_ca_file() {
        let t = Trust::load(None);
        assert!(t.config.is_ok());
        assert_eq!(t.extra_roots, 0);
        assert!(t.is_current(None) && t.is_current(Some("  ")));
        assert!(!t.is_current(Some("/nonexistent/ca.pem")));
    }

    #[test]
    fn an_unusable_ca_file_is_a_clear_problem() {
        let t = Trust::load(Some("/nonexistent/ca.pem"));
        let p = t.problem().unwrap();
        assert!(
            p.starts_with("pulse.http_ca_file \"/nonexistent/ca.pem\" cannot be read"),
            "{p}"
        );
        assert!(t.is_current(Some("/nonexistent/ca.pem")));
        let dir = std::env::temp_dir().join(format!("pulse_tls_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let t = Trust::load(f.to_str());
        assert!(
            t.problem().unwrap().contains("holds no certificate"),
            "{t:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
