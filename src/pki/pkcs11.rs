//! Keys on a smart card, a USB token or an HSM, through PKCS#11
//! (`cryptoki`), named by RFC 7512 URIs:
//! `pkcs11:token=jumgw;object=seal?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/jumgw/pin`.
//! The key never leaves the device: what is signed goes in, the signature
//! comes out. The PIN comes from `pin-value`, `pin-source=file:…`, or
//! `JUMGW_PKCS11_PIN`; it is never shown (`Pkcs11Uri::redacted`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::xml::{Algorithm, DeviceKey};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("{uri}: {detail}")]
    Uri { uri: String, detail: String },
    #[error("{uri}: {detail}")]
    Token { uri: String, detail: String },
}

/// An RFC 7512 URI of a private key, as far as the gateway needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub module_path: PathBuf,
    pub pin_source: Option<PathBuf>,
    pub pin_value: Option<String>,
}

/// Is this key setting a PKCS#11 URI (rather than a PEM file)?
pub fn is_uri(key: &str) -> bool {
    key.starts_with("pkcs11:")
}

/// `%XX` escapes decoded, as RFC 7512 writes any byte.
fn unescape(v: &str) -> Result<Vec<u8>, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad %-escape at {:?}", &v[i..]))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

impl Pkcs11Uri {
    pub fn parse(uri: &str) -> Result<Pkcs11Uri, Pkcs11Error> {
        let fail = |detail: String| Pkcs11Error::Uri {
            uri: redact(uri),
            detail,
        };
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| fail("not a PKCS#11 URI (pkcs11:…)".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.contains("pin-value") {
            return Err(fail("pin-value belongs in the query, after `?`".into()));
        }
        let mut u = Pkcs11Uri {
            token: None,
            object: None,
            id: None,
            module_path: PathBuf::new(),
            pin_source: None,
            pin_value: None,
        };
        let text = |v: &str, name: &str| {
            String::from_utf8(unescape(v).map_err(&fail)?)
                .map_err(|_| fail(format!("{name} is not UTF-8")))
        };
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| fail(format!("{part:?} is not name=value")))?;
            match k {
                "token" => u.token = Some(text(v, k)?),
                "object" => u.object = Some(text(v, k)?),
                "id" => u.id = Some(unescape(v).map_err(&fail)?),
                // Narrower matches a token or object may offer: the label
                // and id above decide.
                "type"
                | "manufacturer"
                | "model"
                | "serial"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                other => return Err(fail(format!("unknown attribute {other:?}"))),
            }
        }
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| fail(format!("{part:?} is not name=value")))?;
            match k {
                "module-path" => u.module_path = PathBuf::from(text(v, k)?),
                "pin-source" => {
                    let v = text(v, k)?;
                    let file = v.strip_prefix("file:").unwrap_or(&v);
                    u.pin_source = Some(PathBuf::from(file));
                }
                // Its escapes are not shown when they are wrong: it is the PIN.
                "pin-value" => {
                    let pin = unescape(v)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| fail("pin-value is not a well-escaped UTF-8 text".into()))?;
                    u.pin_value = Some(pin);
                }
                "module-name" => {}
                other => return Err(fail(format!("unknown query attribute {other:?}"))),
            }
        }
        if u.module_path.as_os_str().is_empty() {
            return Err(fail(
                "no module-path (the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)".into(),
            ));
        }
        if u.object.is_none() && u.id.is_none() {
            return Err(fail("names no key: give object=LABEL or id=…".into()));
        }
        Ok(u)
    }

    /// The PIN, from the URI, its file, or `JUMGW_PKCS11_PIN`.
    fn pin(&self, uri: &str) -> Result<Option<AuthPin>, Pkcs11Error> {
        if let Some(p) = &self.pin_value {
            return Ok(Some(AuthPin::new(p.clone().into())));
        }
        if let Some(f) = &self.pin_source {
            let text = std::fs::read_to_string(f).map_err(|e| Pkcs11Error::Token {
                uri: redact(uri),
                detail: format!("the PIN file {}: {e}", f.display()),
            })?;
            return Ok(Some(AuthPin::new(
                text.trim_end_matches(['\n', '\r']).to_owned().into(),
            )));
        }
        Ok(std::env::var("JUMGW_PKCS11_PIN")
            .ok()
            .map(|p| AuthPin::new(p.into())))
    }
}

/// The URI without its PIN, for messages and logs: wherever `pin-value=`
/// stands, up to the next separator.
pub fn redact(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find("pin-value=") {
        out.push_str(&rest[..at]);
        out.push_str("pin-value=…");
        let tail = &rest[at + "pin-value=".len()..];
        let end = tail.find(['&', ';', '?']).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A private key on a token, with a pool of sessions: concurrent
/// signatures each take a session of their own instead of queueing on one.
pub struct TokenKey {
    ctx: Pkcs11,
    slot: Slot,
    key: ObjectHandle,
    alg: Algorithm,
    sessions: Mutex<Vec<Session>>,
    pin: Option<AuthPin>,
    uri: String,
}

impl TokenKey {
    /// Opens the token the URI names, logs in, finds the key. A wrong
    /// PIN, a missing token or object is an error naming the URI.
    pub fn open(uri: &str) -> Result<Arc<TokenKey>, Pkcs11Error> {
        let u = Pkcs11Uri::parse(uri)?;
        let shown = redact(uri);
        let fail = |what: &str, e: &dyn std::fmt::Display| Pkcs11Error::Token {
            uri: shown.clone(),
            detail: format!("{what}: {e}"),
        };
        let ctx = Pkcs11::new(&u.module_path).map_err(|e| fail("loading the module", &e))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::CryptokiAlreadyInitialized,
                _,
            )) => {}
            Err(e) => return Err(fail("initialising the module", &e)),
        }
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| fail("listing tokens", &e))?;
        let slot = slots
            .into_iter()
            .find(|s| {
                u.token.as_deref().is_none_or(|want| {
                    ctx.get_token_info(*s)
                        .map(|i| i.label().trim_end() == want)
                        .unwrap_or(false)
                })
            })
            .ok_or_else(|| Pkcs11Error::Token {
                uri: shown.clone(),
                detail: format!(
                    "no token{} in this module",
                    u.token
                        .as_deref()
                        .map(|t| format!(" labelled {t:?}"))
                        .unwrap_or_default()
                ),
            })?;
        let pin = u.pin(uri)?;
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| fail("opening a session", &e))?;
        session
            .login(UserType::User, pin.as_ref())
            .or_else(|e| match e {
                cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::UserAlreadyLoggedIn,
                    _,
                ) => Ok(()),
                e => Err(e),
            })
            .map_err(|e| fail("logging in (is the PIN right?)", &e))?;
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(o) = &u.object {
            template.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &u.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = session
            .find_objects(&template)
            .map_err(|e| fail("looking for the key", &e))?;
        let key = match found.as_slice() {
            [k] => *k,
            [] => {
                return Err(Pkcs11Error::Token {
                    uri: shown,
                    detail: "no private key with this label or id on the token".into(),
                })
            }
            _ => {
                return Err(Pkcs11Error::Token {
                    uri: shown,
                    detail: format!("{} private keys match; name one by id", found.len()),
                })
            }
        };
        let kind = session
            .get_attributes(key, &[AttributeType::KeyType])
            .map_err(|e| fail("reading the key's type", &e))?;
        let alg = match kind.first() {
            Some(Attribute::KeyType(k)) if *k == KeyType::RSA => Algorithm::RsaSha256,
            Some(Attribute::KeyType(k)) if *k == KeyType::EC => Algorithm::EcdsaSha256,
            other => {
                return Err(Pkcs11Error::Token {
                    uri: shown,
                    detail: format!("the key is neither RSA nor EC ({other:?})"),
                })
            }
        };
        Ok(Arc::new(TokenKey {
            ctx,
            slot,
            key,
            alg,
            sessions: Mutex::new(vec![session]),
            pin,
            uri: shown,
        }))
    }

    /// Is the key marked so that it can never be read out of the token?
    pub fn unextractable(&self) -> Result<bool, Pkcs11Error> {
        let s = self.session()?;
        let got = s
            .get_attributes(
                self.key,
                &[AttributeType::Extractable, AttributeType::Sensitive],
            )
            .map_err(|e| Pkcs11Error::Token {
                uri: self.uri.clone(),
                detail: e.to_string(),
            });
        self.give_back(s);
        let got = got?;
        Ok(got.contains(&Attribute::Extractable(false))
            && got.contains(&Attribute::Sensitive(true)))
    }

    fn session(&self) -> Result<Session, Pkcs11Error> {
        if let Some(s) = crate::sync::lock(&self.sessions).pop() {
            return Ok(s);
        }
        // Login is the application's, not the session's: a new session
        // of a logged-in token may sign at once.
        self.ctx
            .open_ro_session(self.slot)
            .map_err(|e| Pkcs11Error::Token {
                uri: self.uri.clone(),
                detail: format!("opening a session: {e}"),
            })
    }

    fn give_back(&self, s: Session) {
        crate::sync::lock(&self.sessions).push(s);
    }
}

impl DeviceKey for TokenKey {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn sign_sha256(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        let s = self.session().map_err(|e| e.to_string())?;
        let signed = match self.alg {
            Algorithm::RsaSha256 => s.sign(&Mechanism::Sha256RsaPkcs, self.key, data),
            // CKM_ECDSA signs a digest and answers r ‖ s, XML-DSig's form.
            Algorithm::EcdsaSha256 => {
                s.sign(&Mechanism::Ecdsa, self.key, &openssl::sha::sha256(data))
            }
        };
        let signed = match signed {
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserNotLoggedIn, _)) => {
                // The token was removed and put back: log in again, once.
                s.login(UserType::User, self.pin.as_ref())
                    .map_err(|e| format!("{}: logging in again: {e}", self.uri))?;
                match self.alg {
                    Algorithm::RsaSha256 => s.sign(&Mechanism::Sha256RsaPkcs, self.key, data),
                    Algorithm::EcdsaSha256 => {
                        s.sign(&Mechanism::Ecdsa, self.key, &openssl::sha::sha256(data))
                    }
                }
            }
            other => other,
        };
        match signed {
            Ok(sig) => {
                self.give_back(s);
                Ok(sig)
            }
            // A session that failed is dropped, not pooled.
            Err(e) => Err(format!("{}: signing on the token: {e}", self.uri)),
        }
    }
}

/// The signing key a setting names: a PKCS#11 URI, or a PEM file.
pub fn signing_key(
    key: &std::path::Path,
    cert_pem: &[u8],
) -> Result<crate::xml::SigningKey, String> {
    let text = key.to_string_lossy();
    if is_uri(&text) {
        let token = TokenKey::open(&text).map_err(|e| e.to_string())?;
        return crate::xml::SigningKey::from_device(token, cert_pem)
            .map_err(|e| format!("{}: {e}", redact(&text)));
    }
    let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    crate::xml::SigningKey::from_pem(&pem, cert_pem, None)
        .map_err(|e| format!("{}: {e}", key.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_uri_names_its_token_key_module_and_pin() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=jum%20gw;object=seal;id=%01%a0?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/jumgw/pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("jum gw"));
        assert_eq!(u.object.as_deref(), Some("seal"));
        assert_eq!(u.id, Some(vec![1, 0xa0]));
        assert_eq!(
            u.module_path,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.pin_source, Some(PathBuf::from("/etc/jumgw/pin")));
        for (bad, why) in [
            ("pkcs11:object=seal", "no module-path"),
            ("pkcs11:token=t?module-path=/m.so", "names no key"),
            ("pkcs11:objekt=seal?module-path=/m.so", "unknown attribute"),
            ("pkcs11:object=%zz?module-path=/m.so", "bad %-escape"),
            ("file:/k.pem", "not a PKCS#11 URI"),
        ] {
            let e = Pkcs11Uri::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let shown = redact("pkcs11:object=k?module-path=/m.so&pin-value=1234");
        assert!(!shown.contains("1234"), "{shown}");
        let e = Pkcs11Uri::parse("pkcs11:objekt=k?module-path=/m.so&pin-value=1234")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("1234"), "{e}");
    }

    proptest! {
        /// Any text is parsed or refused with a message, never a panic, and
        /// a PIN in it never shows in the message.
        #[test]
        fn any_uri_is_parsed_or_refused(s in "pkcs11:[a-z=;%0-9A-F?&/.-]{0,60}") {
            let with_pin = format!("{s}&pin-value=SECRET9");
            if let Err(e) = Pkcs11Uri::parse(&with_pin) {
                prop_assert!(!e.to_string().contains("SECRET9"));
            }
        }
    }
}
