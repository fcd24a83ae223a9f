//! An HTTPS server on 127.0.0.1 with its own certificate authority, for the tests of
//! `pulse.http_ca_file`: a CA and a certificate for 127.0.0.1 signed by it are made with the
//! `openssl` command in a fresh directory; every request gets `200 OK` and the body `secure`.
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct TlsServer {
    pub port: u16,
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca_file: PathBuf,
    dir: PathBuf,
    served: Arc<AtomicUsize>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `ca.pem` (a CA) and `leaf.pem` / `leaf.key` (127.0.0.1, signed by the CA) in `dir`.
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("ca.cnf"),
        "[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [v3_leaf]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n\
         authorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    openssl(dir, &[&["genpkey"][..], &ec, &["-out", "ca.key"]].concat());
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=pg_pulse test CA",
            "-days",
            "2",
            "-config",
            "ca.cnf",
            "-extensions",
            "v3_ca",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[&["genpkey"][..], &ec, &["-out", "leaf.key"]].concat(),
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "leaf.key",
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            "leaf.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ca.cnf",
            "-extensions",
            "v3_leaf",
            "-out",
            "leaf.pem",
        ],
    );
}

impl TlsServer {
    pub fn start() -> TlsServer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pulse_tls_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("leaf.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut tcp) = conn else { continue };
                let config = config.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, &mut tcp);
                    let mut r = BufReader::new(&mut tls);
                    loop {
                        let mut line = String::new();
                        // a failed handshake (the client did not trust us) ends here
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    let tls = r.into_inner();
                    let _ = tls.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure",
                    );
                    let _ = tls.flush();
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        TlsServer {
            port,
            ca_file: dir.join("ca.pem"),
            dir,
            served,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Requests answered so far (after a successful handshake).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}
