//! Certificates made at test time (rcgen): a CA, the certificate `weir`
//! serves with, and client certificates for Envoy and other clients, written
//! as PEM files in a temporary folder.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;

/// The DNS name in weir's certificate, which clients check (and send as SNI).
pub const SERVER_NAME: &str = "weir.example";

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Ca {
    /// A new CA named `name`, writing its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        std::fs::create_dir_all(dir)?;
        let ca = Self {
            issuer,
            dir: dir.to_owned(),
            name: name.to_owned(),
        };
        std::fs::write(ca.cert_path(), ca.issuer.pem())?;
        Ok(ca)
    }

    /// The CA's certificate, PEM.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A certificate for weir: [`SERVER_NAME`], `localhost` and 127.0.0.1,
    /// written as `<file>.crt` and `<file>.key`.
    pub fn server(&self, file: &str) -> anyhow::Result<Pem> {
        self.weir(file, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A certificate for a replica of weir, which serves with it and shows
    /// it as a client to the leader: [`Ca::server`]'s names, for both uses.
    pub fn peer(&self, file: &str) -> anyhow::Result<Pem> {
        let uses = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.weir(file, uses)
    }

    fn weir(&self, file: &str, uses: Vec<ExtendedKeyUsagePurpose>) -> anyhow::Result<Pem> {
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_owned(), "localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        params.extended_key_usages = uses;
        self.sign(params, file)
    }

    /// A client certificate naming `spiffe` (a URI SAN, as SPIFFE IDs are).
    pub fn client(&self, file: &str, spiffe: &str) -> anyhow::Result<Pem> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .subject_alt_names
            .push(SanType::URI(spiffe.try_into()?));
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, file)
    }

    fn sign(&self, params: CertificateParams, file: &str) -> anyhow::Result<Pem> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let pem = Pem {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        // The key first: a reader that sees the new certificate finds its key.
        write_atomically(&pem.key, &key.serialize_pem())?;
        write_atomically(&pem.cert, &cert.pem())?;
        Ok(pem)
    }
}

/// A rustls client configuration that trusts `ca` and shows `identity`
/// when given one, offering HTTP/2 and HTTP/1.1.
pub fn client_config(ca: &Path, identity: Option<&Pem>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let chain = CertificateDer::pem_file_iter(&pem.cert)?.collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&pem.key)?)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate a new TLS connection to `addr` is served (DER), the
/// server checked against `ca` as [`SERVER_NAME`].
pub async fn served_certificate(addr: SocketAddr, ca: &Path) -> anyhow::Result<Vec<u8>> {
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config(ca, None)?));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from(SERVER_NAME)?, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| anyhow::anyhow!("{addr} showed no certificate"))?;
    Ok(leaf.to_vec())
}

/// An HTTPS client (HTTP/2 or 1.1, a new connection when the pool has none).
#[derive(Clone)]
pub struct Https {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Https {
    /// A client that trusts `ca` and shows `identity` when given one.
    pub fn new(ca: &Path, identity: Option<&Pem>) -> anyhow::Result<Self> {
        // The connector offers the protocols itself.
        let mut config = client_config(ca, identity)?;
        config.alpn_protocols.clear();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_all_versions()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// `method url` with `body`: the status and the body.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut request = hyper::Request::builder().method(method).uri(url);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = self.client.request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body.to_vec()))
    }
}

/// Writes `path` through a rename, as a rotation by an operator (or a
/// Kubernetes secret update) does, so no reader sees half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text)?;
    std::fs::rename(&staged, path)?;
    Ok(())
}
