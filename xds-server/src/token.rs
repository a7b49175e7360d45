//! Bearer tokens: where one comes from (a flag, its environment variable or a
//! file), and the constant-time check of what a client presents. The admin
//! API (`admin/auth.rs`) and the xDS port (`xds/auth.rs`) each require their
//! own.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A token requests must carry. Only its digest is kept.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    digest: Arc<[u8; 32]>,
}

impl Token {
    /// The token given as `value` or in the file `file` (surrounding
    /// whitespace ignored); `None` when neither is given. `what` names it in
    /// errors ("the admin token").
    pub(crate) fn load(
        value: Option<&str>,
        file: Option<&Path>,
        what: &str,
    ) -> anyhow::Result<Option<Self>> {
        Ok(read(value, file, what)?.map(|token| Self {
            digest: Arc::new(digest(token.as_bytes())),
        }))
    }

    /// Whether `presented` is the token.
    pub(crate) fn accepts(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.digest, &digest(presented))
    }
}

/// The token itself, given as `value` or in the file `file`, for a client
/// of another replica to present (see [`Token::load`]).
pub(crate) fn read(
    value: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    let token = match (value, file) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("cannot read {what} file {}: {err}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        anyhow::bail!("{what} is empty");
    }
    Ok(Some(token))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares digests in time independent of where they differ (and, digests
/// being of fixed length, of the token's length).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is
/// case-insensitive).
pub(crate) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_is_accepted() {
        let token = Token::load(Some(" s3cret\n"), None, "the token")
            .unwrap()
            .unwrap();
        assert!(token.accepts(b"s3cret"));
        assert!(!token.accepts(b"s3cre"));
        assert!(!token.accepts(b"s3cret "));
        assert!(!token.accepts(b""));
    }

    #[test]
    fn tokens_come_from_a_value_or_a_file_and_are_never_empty() {
        assert!(Token::load(None, None, "the token").unwrap().is_none());
        let empty = Token::load(Some(" "), None, "the xDS token").unwrap_err();
        assert_eq!(empty.to_string(), "the xDS token is empty");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let token = Token::load(None, Some(&path), "the token")
            .unwrap()
            .unwrap();
        assert!(token.accepts(b"from-file"));
        let missing = Token::load(None, Some(&dir.path().join("nope")), "the admin token");
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .starts_with("cannot read the admin token file")
        );
    }

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
    }
}
