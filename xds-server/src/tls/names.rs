//! Which client certificates a port accepts beyond its CA's signature: an
//! allow-list of subject alternative names — SPIFFE IDs (URI SANs) or DNS
//! names — each exact, or a prefix ending in `*`
//! (`spiffe://fleet.example/ns/edge/*`).

use x509_parser::extensions::GeneralName;

/// The allow-list of one port; empty allows every certificate the CA signed.
#[derive(Clone, Debug, Default)]
pub struct AllowedNames(Vec<String>);

impl AllowedNames {
    pub fn new(names: &[String]) -> Self {
        Self(
            names
                .iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when the certificate (DER) names an allowed SAN, else the names
    /// it has, for the log.
    pub fn check(&self, certificate: &[u8]) -> Result<(), Vec<String>> {
        if self.0.is_empty() {
            return Ok(());
        }
        let names = subject_alt_names(certificate);
        if names.iter().any(|name| self.allows(name)) {
            Ok(())
        } else {
            Err(names)
        }
    }

    fn allows(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == allowed,
            })
    }
}

/// The URI and DNS names a certificate's SAN extension holds (none when it
/// cannot be parsed: such a certificate is not allowed by name).
fn subject_alt_names(certificate: &[u8]) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(names: &[&str]) -> AllowedNames {
        AllowedNames::new(&names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn exact_names_and_prefixes() {
        let list = allowed(&[
            "spiffe://fleet.example/envoy",
            "spiffe://fleet.example/ns/edge/*",
            "gw.example",
        ]);
        assert!(list.allows("spiffe://fleet.example/envoy"));
        assert!(!list.allows("spiffe://fleet.example/envoy2"));
        assert!(list.allows("spiffe://fleet.example/ns/edge/gw-7"));
        assert!(!list.allows("spiffe://fleet.example/ns/core/gw-7"));
        assert!(list.allows("gw.example"));
        assert!(!list.allows("sub.gw.example"));
    }

    #[test]
    fn an_empty_list_allows_all_and_garbage_names_nothing() {
        assert!(allowed(&[" ", ""]).is_empty());
        assert_eq!(allowed(&[]).check(b"not a certificate"), Ok(()));
        assert_eq!(allowed(&["x"]).check(b"not a certificate"), Err(Vec::new()));
    }
}
