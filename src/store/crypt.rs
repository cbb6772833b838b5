//! Documents at rest: AES-256-GCM (openssl) under a key from the
//! configuration, so the raw sled files never hold a citizen's data in
//! clear. A sealed document is `1 ‖ nonce(12) ‖ ciphertext ‖ tag(16)`, with
//! the request id as associated data so a ciphertext cannot be moved to
//! another request. The store keeps a key check value in `meta`: opening it
//! with another key is a start-up error, never silent garbage or plaintext.

use openssl::rand::rand_bytes;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

use super::{QueueStore, StoreError};

const VERSION: u8 = 1;
const CHECK_ID: &str = "__key_check";
const CHECK_PLAINTEXT: &[u8] = b"jum-gateway document key check";

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CryptError {
    #[error("document key: {0}")]
    Key(String),
    #[error("the document key does not match the key this store was written with")]
    WrongKey,
    #[error("document {0} cannot be decrypted (damaged, or moved from another request)")]
    Corrupt(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// 256 bits written as 64 hex digits.
pub fn parse_hex_key(text: &str) -> Result<[u8; 32], CryptError> {
    let t = text.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CryptError::Key("expected 64 hex digits (256 bits)".into()));
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
            .map_err(|e| CryptError::Key(e.to_string()))?;
    }
    Ok(key)
}

/// Reads a key file of 64 hex digits, or creates one (0600, random) when
/// `create` and it is absent. Used for the document key and the audit key.
pub fn read_key_file(path: &std::path::Path, create: bool) -> Result<[u8; 32], CryptError> {
    let err = |e: std::io::Error| CryptError::Key(format!("{}: {e}", path.display()));
    if !path.exists() && create {
        let hex = DocumentCipher::generate_hex()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CryptError::Key(format!("{}: {e}", dir.display())))?;
        }
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        opts.open(path)
            .and_then(|mut f| f.write_all(hex.as_bytes()))
            .map_err(err)?;
    }
    let text = std::fs::read_to_string(path).map_err(err)?;
    parse_hex_key(&text).map_err(|e| CryptError::Key(format!("{}: {e}", path.display())))
}

/// The document key.
#[derive(Clone)]
pub struct DocumentCipher {
    key: [u8; 32],
}

impl std::fmt::Debug for DocumentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DocumentCipher(..)")
    }
}

impl DocumentCipher {
    /// A key written as 64 hex digits (as in a key file).
    pub fn from_hex(text: &str) -> Result<DocumentCipher, CryptError> {
        Ok(DocumentCipher {
            key: parse_hex_key(text)?,
        })
    }

    /// A fresh random key, as hex.
    pub fn generate_hex() -> Result<String, CryptError> {
        let mut k = [0u8; 32];
        rand_bytes(&mut k).map_err(|e| CryptError::Key(e.to_string()))?;
        Ok(k.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Reads a key file, or creates one (0600) when `create` and it is absent.
    pub fn from_file(path: &std::path::Path, create: bool) -> Result<DocumentCipher, CryptError> {
        Ok(DocumentCipher {
            key: read_key_file(path, create)?,
        })
    }

    pub fn seal(&self, id: &str, plain: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut nonce = [0u8; 12];
        rand_bytes(&mut nonce).map_err(|e| CryptError::Key(e.to_string()))?;
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(&nonce),
            id.as_bytes(),
            plain,
            &mut tag,
        )
        .map_err(|e| CryptError::Key(e.to_string()))?;
        let mut out = Vec::with_capacity(1 + 12 + ct.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub fn open(&self, id: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err(CryptError::Corrupt(id.to_owned()));
        }
        let (nonce, rest) = sealed[1..].split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(nonce),
            id.as_bytes(),
            ct,
            tag,
        )
        .map_err(|_| CryptError::Corrupt(id.to_owned()))
    }

    /// Checks this key against the store, writing the check value the first
    /// time. (A store restored from an export gets its check value from the
    /// first key it is opened with: restore with the key it was written with.)
    pub async fn check(&self, store: &dyn QueueStore) -> Result<(), CryptError> {
        match store.document(CHECK_ID).await? {
            Some(sealed) => match self.open(CHECK_ID, &sealed) {
                Ok(p) if p == CHECK_PLAINTEXT => Ok(()),
                _ => Err(CryptError::WrongKey),
            },
            None => {
                store
                    .put_document(CHECK_ID, &self.seal(CHECK_ID, CHECK_PLAINTEXT)?)
                    .await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_refuses_a_second_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path(), 1 << 20).unwrap();
        let a = DocumentCipher::from_hex(&DocumentCipher::generate_hex().unwrap()).unwrap();
        let b = DocumentCipher::from_hex(&DocumentCipher::generate_hex().unwrap()).unwrap();
        a.check(&*store).await.unwrap();
        a.check(&*store).await.unwrap();
        assert!(matches!(b.check(&*store).await, Err(CryptError::WrongKey)));
        assert_eq!(
            CryptError::WrongKey.to_string(),
            "the document key does not match the key this store was written with"
        );
    }

    #[test]
    fn seal_open_and_refuse_tampering_or_moving() {
        let c = DocumentCipher::from_hex(&DocumentCipher::generate_hex().unwrap()).unwrap();
        let s = c.seal("01A", b"<doc>Jelena</doc>").unwrap();
        assert!(!s.windows(6).any(|w| w == b"Jelena"));
        assert_eq!(c.open("01A", &s).unwrap(), b"<doc>Jelena</doc>");
        assert!(
            matches!(c.open("01B", &s), Err(CryptError::Corrupt(_))),
            "bound to its request id"
        );
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(c.open("01A", &t).is_err());
        let other = DocumentCipher::from_hex(&DocumentCipher::generate_hex().unwrap()).unwrap();
        assert!(other.open("01A", &s).is_err());
        assert!(DocumentCipher::from_hex("abc").is_err());
    }
}
