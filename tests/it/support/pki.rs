//! A private PKI for one test: a CA and a server certificate it signed for `127.0.0.1` and
//! `localhost`, as PEM files in a temporary directory, generated with rcgen.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// A CA generated for one test, and a server certificate it signed for `127.0.0.1` and
/// `localhost`, as PEM files in a temporary directory.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// A new CA and server certificate.
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("empty CA parameters");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rangefetch test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the CA certificate");

        let server_key = KeyPair::generate().expect("generate the server key");
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server certificate parameters");
        server_params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("sign the server certificate");

        let dir = tempfile::Builder::new()
            .prefix("rangefetch-pki-")
            .tempdir()
            .expect("create the certificates' directory");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).expect("write server.pem");
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem())
            .expect("write server.key");
        TestPki { dir }
    }

    /// The CA certificate, PEM: what `--ca-cert` takes.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate, PEM.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key, PEM.
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}
