//! Keys on a smart card, a USB token or an HSM, through PKCS#11
//! (`cryptoki`), named by RFC 7512 URIs:
//! `pkcs11:token=jumgw;object=seal?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/jumgw/pin`.
//! The key never leaves the device: what is signed goes in, the signature
//! comes out. The PIN comes from `pin-value`, `pin-source=file:…`, or
//! `JUMGW_PKCS11_PIN`; it is never shown (`Pkcs11Uri::redacted`).
//! A token taken out and put back is used again without a restart
//! ([`TokenKey`]); [`state`] tells whether a key's token is there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::pki::KeyKind;
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
///
/// A token taken out loses the key's handle and the sessions; put back,
/// the key is looked for again (the module re-initialised when it has to
/// be: SoftHSM2, like some readers, sees a token come back only after
/// `C_Finalize`/`C_Initialize`), at most once per backoff step while it
/// stays away, so that a missing token does not cost a lookup per
/// signature. [`state`] tells `/readyz`, the metrics and the alerts.
pub struct TokenKey {
    module: Arc<Module>,
    u: Pkcs11Uri,
    alg: Algorithm,
    /// An EC key on P-256, the one curve TLS 1.3 pairs with SHA-256.
    p256: bool,
    pin: Option<AuthPin>,
    uri: String,
    /// The key's handle and its sessions, while the token is there.
    live: Mutex<Option<Live>>,
    health: Mutex<Health>,
    /// The public key of the certificate this key was proven against
    /// ([`TokenKey::bind`]): a key found again must sign for it.
    bound: Mutex<Option<openssl::pkey::PKey<openssl::pkey::Public>>>,
}

/// What is valid only for one initialisation of the module and while the
/// token stays in.
struct Live {
    generation: u64,
    slot: Slot,
    key: ObjectHandle,
    sessions: Vec<Session>,
}

impl Live {
    /// Closes its sessions, or forgets them when the module was
    /// initialised again since: their handles are not ours any more, and
    /// closing one could close another key's new session of that number.
    /// The caller holds the module shared, so `current` cannot change.
    fn discard(self, current: u64) {
        if self.generation == current {
            drop(self.sessions);
        } else {
            self.sessions.into_iter().for_each(std::mem::forget);
        }
    }
}

/// The first wait before a token that went away is looked for again;
/// each failed look doubles it, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

struct Health {
    up: bool,
    /// When it was last found or lost (ms since the epoch).
    since_ms: u64,
    /// Why it is away.
    error: Option<String>,
    /// No look before this.
    next_look: Instant,
    wait: Duration,
    looks: u64,
}

/// A key's token, as `/readyz`, the metrics and the alerts show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub up: bool,
    /// Since when it is up or away (ms since the epoch).
    pub since_ms: u64,
    /// Why it is away (the URI without its PIN, and the module's answer).
    pub error: Option<String>,
    /// How many times the key was looked for again since it was opened.
    pub looks: u64,
}

/// A PKCS#11 library, loaded and initialised once per process: the seal
/// and the TLS key of one token share it (PKCS#11 allows one
/// `C_Initialize` per process, and `C_Finalize` ends it for every key).
struct Module {
    /// Shared by every call that uses a session or a handle, taken alone
    /// to initialise the library again: no call is ever in flight on a
    /// handle of the initialisation that ends.
    ctx: RwLock<Ctx>,
}

struct Ctx {
    pkcs11: Pkcs11,
    /// Counts initialisations: a handle of an older one is not valid.
    generation: u64,
}

fn initialise(p: &Pkcs11) -> Result<(), String> {
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => Ok(()),
        Err(e) => Err(format!("initialising the module: {e}")),
    }
}

/// The module at `path`, loaded and initialised once in the process.
fn module(path: &Path) -> Result<Arc<Module>, String> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    let mut all = crate::sync::lock(MODULES.get_or_init(Default::default));
    if let Some(m) = all.get(path) {
        return Ok(m.clone());
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| format!("loading the module: {e}"))?;
    initialise(&pkcs11)?;
    let m = Arc::new(Module {
        ctx: RwLock::new(Ctx {
            pkcs11,
            generation: 0,
        }),
    });
    all.insert(path.to_owned(), m.clone());
    Ok(m)
}

impl Module {
    /// `C_Finalize` and `C_Initialize` again, unless another key did it
    /// since `seen`: the module then lists its slots and tokens afresh.
    /// Every session and handle of the module ends; each key finds its
    /// own again.
    fn reinitialise(&self, seen: u64) -> Result<(), String> {
        let mut c = crate::sync::write(&self.ctx);
        if c.generation != seen {
            return Ok(());
        }
        c.generation += 1;
        if let Err(e) = c.pkcs11.clone().finalize() {
            tracing::debug!(error = %e, "PKCS#11: finalising the module");
        }
        initialise(&c.pkcs11)
    }
}

/// The slot of the token the URI names.
fn find_slot(ctx: &Pkcs11, u: &Pkcs11Uri, shown: &str) -> Result<Slot, Pkcs11Error> {
    let slots = ctx.get_slots_with_token().map_err(|e| Pkcs11Error::Token {
        uri: shown.to_owned(),
        detail: format!("listing tokens: {e}"),
    })?;
    slots
        .into_iter()
        .find(|s| {
            u.token.as_deref().is_none_or(|want| {
                ctx.get_token_info(*s)
                    .map(|i| i.label().trim_end() == want)
                    .unwrap_or(false)
            })
        })
        .ok_or_else(|| Pkcs11Error::Token {
            uri: shown.to_owned(),
            detail: format!(
                "no token{} in this module",
                u.token
                    .as_deref()
                    .map(|t| format!(" labelled {t:?}"))
                    .unwrap_or_default()
            ),
        })
}

/// Logs the application in (once per token, whichever session does it).
fn login(session: &Session, pin: Option<&AuthPin>, shown: &str) -> Result<(), Pkcs11Error> {
    session
        .login(UserType::User, pin)
        .or_else(|e| match e {
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _) => {
                Ok(())
            }
            e => Err(e),
        })
        .map_err(|e| Pkcs11Error::Token {
            uri: shown.to_owned(),
            detail: format!("logging in (is the PIN right?): {e}"),
        })
}

/// A token the URI names, opened and logged in.
struct Opened {
    u: Pkcs11Uri,
    /// The URI without its PIN.
    shown: String,
    module: Arc<Module>,
    pin: Option<AuthPin>,
    slot: Slot,
    session: Session,
}

impl Opened {
    fn new(uri: &str, read_write: bool) -> Result<Opened, Pkcs11Error> {
        let u = Pkcs11Uri::parse(uri)?;
        let shown = redact(uri);
        let module = module(&u.module_path).map_err(|detail| Pkcs11Error::Token {
            uri: shown.clone(),
            detail,
        })?;
        let pin = u.pin(uri)?;
        let c = crate::sync::read(&module.ctx);
        let slot = find_slot(&c.pkcs11, &u, &shown)?;
        let session = if read_write {
            c.pkcs11.open_rw_session(slot)
        } else {
            c.pkcs11.open_ro_session(slot)
        }
        .map_err(|e| Pkcs11Error::Token {
            uri: shown.clone(),
            detail: format!("opening a session: {e}"),
        })?;
        login(&session, pin.as_ref(), &shown)?;
        drop(c);
        Ok(Opened {
            u,
            shown,
            module,
            pin,
            slot,
            session,
        })
    }
}

/// The attributes that find the URI's object of `class`.
fn template(u: &Pkcs11Uri, class: ObjectClass) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(class)];
    if let Some(o) = &u.object {
        t.push(Attribute::Label(o.as_bytes().to_vec()));
    }
    if let Some(id) = &u.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

/// DER of the OID of P-256 (prime256v1), as CKA_EC_PARAMS holds it.
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The one private key the URI names on a logged-in session, its
/// algorithm, and whether it is on P-256.
fn find_key(
    session: &Session,
    u: &Pkcs11Uri,
    shown: &str,
) -> Result<(ObjectHandle, Algorithm, bool), Pkcs11Error> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Pkcs11Error::Token {
        uri: shown.to_owned(),
        detail: format!("{what}: {e}"),
    };
    let found = session
        .find_objects(&template(u, ObjectClass::PRIVATE_KEY))
        .map_err(|e| fail("looking for the key", &e))?;
    let key = match found.as_slice() {
        [k] => *k,
        [] => {
            return Err(Pkcs11Error::Token {
                uri: shown.to_owned(),
                detail: "no private key with this label or id on the token".into(),
            })
        }
        _ => {
            return Err(Pkcs11Error::Token {
                uri: shown.to_owned(),
                detail: format!("{} private keys match; name one by id", found.len()),
            })
        }
    };
    let kind = session
        .get_attributes(key, &[AttributeType::KeyType])
        .map_err(|e| fail("reading the key's type", &e))?;
    let p256 = session
        .get_attributes(key, &[AttributeType::EcParams])
        .map(|a| a.contains(&Attribute::EcParams(P256.to_vec())))
        .unwrap_or(false);
    let alg = match kind.first() {
        Some(Attribute::KeyType(k)) if *k == KeyType::RSA => Algorithm::RsaSha256,
        Some(Attribute::KeyType(k)) if *k == KeyType::EC => Algorithm::EcdsaSha256,
        other => {
            return Err(Pkcs11Error::Token {
                uri: shown.to_owned(),
                detail: format!("the key is neither RSA nor EC ({other:?})"),
            })
        }
    };
    Ok((key, alg, p256))
}

/// Every key opened in this process, by its URI without the PIN, for
/// [`state`]; the newest of a URI first.
fn opened() -> &'static Mutex<Vec<(String, Weak<TokenKey>)>> {
    type Keys = Mutex<Vec<(String, Weak<TokenKey>)>>;
    static OPENED: OnceLock<Keys> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// The state of the token of the key `uri` names, as the newest key of
/// that URI opened in this process has it (None: no such key is open).
/// A token that is away is looked for, when its backoff allows; one that
/// is up is asked whether it is still there (`C_GetTokenInfo`). It may
/// block on the module: call it off the async threads.
pub fn state(uri: &str) -> Option<TokenState> {
    let shown = redact(uri);
    let key = {
        let mut all = crate::sync::lock(opened());
        all.retain(|(_, k)| k.strong_count() > 0);
        all.iter()
            .rev()
            .find(|(u, _)| *u == shown)
            .and_then(|(_, k)| k.upgrade())
    }?;
    key.probe();
    Some(key.token_state())
}

/// Whether a failed call means the token, the session or the key's handle
/// is gone (the token taken out, put back, or the module re-initialised):
/// the key is then looked for again rather than the call failed for good.
fn lost(e: &cryptoki::error::Error) -> bool {
    use cryptoki::error::RvError as R;
    matches!(
        e,
        cryptoki::error::Error::Pkcs11(
            R::ObjectHandleInvalid
                | R::KeyHandleInvalid
                | R::SessionHandleInvalid
                | R::SessionClosed
                | R::TokenNotPresent
                | R::TokenNotRecognized
                | R::DeviceRemoved
                | R::DeviceError
                | R::SlotIdInvalid
                | R::UserNotLoggedIn
                | R::CryptokiNotInitialized
                | R::GeneralError,
            _
        )
    )
}

/// How a signature failed.
enum Failure {
    /// The token, a session or the key's handle is gone: look again.
    Lost(String),
    /// Anything else (a mechanism the key refuses, …).
    Other(String),
}

impl TokenKey {
    /// Opens the token the URI names, logs in, finds the key. A wrong
    /// PIN, a missing token or object is an error naming the URI.
    pub fn open(uri: &str) -> Result<Arc<TokenKey>, Pkcs11Error> {
        let Opened {
            u,
            shown,
            module,
            pin,
            slot,
            session,
        } = Opened::new(uri, false)?;
        let c = crate::sync::read(&module.ctx);
        let (key, alg, p256) = find_key(&session, &u, &shown)?;
        let live = Live {
            generation: c.generation,
            slot,
            key,
            sessions: vec![session],
        };
        drop(c);
        let key = Arc::new(TokenKey {
            module,
            u,
            alg,
            p256,
            pin,
            uri: shown.clone(),
            live: Mutex::new(Some(live)),
            health: Mutex::new(Health {
                up: true,
                since_ms: crate::time::now_ms(),
                error: None,
                next_look: Instant::now(),
                wait: BACKOFF_MIN,
                looks: 0,
            }),
            bound: Mutex::new(None),
        });
        let mut all = crate::sync::lock(opened());
        // Keys opened for a while (a dossier's seal) leave no trace.
        all.retain(|(_, k)| k.strong_count() > 0);
        all.push((shown, Arc::downgrade(&key)));
        drop(all);
        Ok(key)
    }

    /// The token's state as this key last saw it.
    pub fn token_state(&self) -> TokenState {
        let h = crate::sync::lock(&self.health);
        TokenState {
            up: h.up,
            since_ms: h.since_ms,
            error: h.error.clone(),
            looks: h.looks,
        }
    }

    /// Drops the key's handle and sessions; the next signature looks for
    /// them again. The caller holds the module shared (`c`).
    fn drop_live(&self, c: &Ctx) {
        if let Some(l) = crate::sync::lock(&self.live).take() {
            l.discard(c.generation);
        }
    }

    fn went_away(&self, why: &str) {
        let mut h = crate::sync::lock(&self.health);
        if h.up {
            tracing::error!(key = %self.uri, error = %why, "the key's token is away: it is looked for again, with backoff");
            h.up = false;
            h.since_ms = crate::time::now_ms();
            h.wait = BACKOFF_MIN;
            h.next_look = Instant::now();
        }
        h.error = Some(why.to_owned());
    }

    /// Asks the token whether it is still there when it is up (a
    /// `C_GetTokenInfo` on its slot), looks for it again when it is away
    /// and its backoff allows.
    fn probe(&self) {
        {
            let c = crate::sync::read(&self.module.ctx);
            let slot = match &*crate::sync::lock(&self.live) {
                Some(l) if l.generation == c.generation => Some(l.slot),
                _ => None,
            };
            if let Some(slot) = slot {
                match c.pkcs11.get_token_info(slot) {
                    Ok(_) => return,
                    Err(e) => {
                        self.drop_live(&c);
                        self.went_away(&format!("{}: the token: {e}", self.uri));
                    }
                }
            }
        }
        self.look_again();
    }

    /// Finds the token, logs in and finds the key again, unless its
    /// backoff says not yet; on the way, the module is initialised again
    /// if the token is not seen otherwise. True when the key is there.
    fn look_again(&self) -> bool {
        {
            let mut h = crate::sync::lock(&self.health);
            let now = Instant::now();
            if now < h.next_look {
                return false;
            }
            // Claimed: others wait for this look's verdict.
            h.next_look = now + h.wait;
            h.looks += 1;
        }
        let seen = match self.find_again() {
            Ok(()) => return self.found(),
            Err((generation, e)) => {
                tracing::debug!(key = %self.uri, error = %e, "the key's token: not there without initialising the module again");
                generation
            }
        };
        if let Err(e) = self.module.reinitialise(seen) {
            tracing::warn!(key = %self.uri, error = %e, "the key's token: initialising the module again");
        }
        match self.find_again() {
            Ok(()) => self.found(),
            Err((_, e)) => {
                let why = e.to_string();
                let was_up = crate::sync::lock(&self.health).up;
                if was_up {
                    self.went_away(&why);
                }
                let mut h = crate::sync::lock(&self.health);
                h.error = Some(why);
                h.next_look = Instant::now() + h.wait;
                h.wait = (h.wait * 2).min(BACKOFF_MAX);
                false
            }
        }
    }

    fn found(&self) -> bool {
        let mut h = crate::sync::lock(&self.health);
        if !h.up {
            tracing::info!(key = %self.uri, "the key's token is back: the key is used again");
            h.up = true;
            h.since_ms = crate::time::now_ms();
        }
        h.error = None;
        h.wait = BACKOFF_MIN;
        h.next_look = Instant::now();
        true
    }

    /// One look, in the module's present initialisation (answered with
    /// the error).
    fn find_again(&self) -> Result<(), (u64, Pkcs11Error)> {
        let c = crate::sync::read(&self.module.ctx);
        let generation = c.generation;
        self.drop_live(&c);
        let look = || -> Result<Live, Pkcs11Error> {
            let slot = find_slot(&c.pkcs11, &self.u, &self.uri)?;
            let session = c
                .pkcs11
                .open_ro_session(slot)
                .map_err(|e| Pkcs11Error::Token {
                    uri: self.uri.clone(),
                    detail: format!("opening a session: {e}"),
                })?;
            login(&session, self.pin.as_ref(), &self.uri)?;
            let (key, alg, p256) = find_key(&session, &self.u, &self.uri)?;
            // The same label on a token put back names a key of the same
            // kind, or the certificate's proof at start means nothing.
            if (alg, p256) != (self.alg, self.p256) {
                return Err(Pkcs11Error::Token {
                    uri: self.uri.clone(),
                    detail: "the key under this label is not of the kind it was at start".into(),
                });
            }
            // Another token under the same label (or a key replaced) is
            // not used in the certificate's name.
            let bound = crate::sync::lock(&self.bound).clone();
            if let Some(public) = bound {
                if !self.proves(&session, key, &public) {
                    return Err(Pkcs11Error::Token {
                        uri: self.uri.clone(),
                        detail:
                            "the key under this label is not the one its certificate names any more"
                                .into(),
                    });
                }
            }
            Ok(Live {
                generation,
                slot,
                key,
                sessions: vec![session],
            })
        };
        let live = look().map_err(|e| (generation, e))?;
        *crate::sync::lock(&self.live) = Some(live);
        Ok(())
    }

    /// Remembers the public key of the certificate this key was proven
    /// against: a key found again after its token came back is used only
    /// if it signs for the same public key.
    pub fn bind(&self, public: openssl::pkey::PKey<openssl::pkey::Public>) {
        *crate::sync::lock(&self.bound) = Some(public);
    }

    /// Does `key` sign a probe that `public` verifies?
    fn proves(
        &self,
        session: &Session,
        key: ObjectHandle,
        public: &openssl::pkey::PKey<openssl::pkey::Public>,
    ) -> bool {
        const PROBE: &[u8] = b"jumgw: the key found again is the certificate's";
        let verify = |sig: &[u8]| {
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), public)
                .and_then(|mut v| {
                    v.update(PROBE)?;
                    v.verify(sig)
                })
                .unwrap_or(false)
        };
        match self.alg {
            Algorithm::RsaSha256 => session
                .sign(&Mechanism::Sha256RsaPkcs, key, PROBE)
                .is_ok_and(|sig| verify(&sig)),
            Algorithm::EcdsaSha256 => session
                .sign(&Mechanism::Ecdsa, key, &openssl::sha::sha256(PROBE))
                .ok()
                .and_then(|rs| ecdsa_der(&rs).ok())
                .is_some_and(|der| verify(&der)),
        }
    }

    /// One signature on a session of the pool; a token that was taken out
    /// and put back (logged out) is logged in again, once.
    fn try_sign(&self, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>, Failure> {
        let c = crate::sync::read(&self.module.ctx);
        let (pooled, slot, key) = {
            let mut live = crate::sync::lock(&self.live);
            match live.as_mut() {
                Some(l) if l.generation == c.generation => (l.sessions.pop(), l.slot, l.key),
                _ => {
                    if let Some(l) = live.take() {
                        l.discard(c.generation);
                    }
                    let why = crate::sync::lock(&self.health).error.clone();
                    return Err(Failure::Lost(why.unwrap_or_else(|| {
                        format!("{}: the module was initialised again", self.uri)
                    })));
                }
            }
        };
        let s = match pooled {
            Some(s) => s,
            // Login is the application's, not the session's: a new
            // session of a logged-in token may sign at once.
            None => c.pkcs11.open_ro_session(slot).map_err(|e| {
                let m = format!("{}: opening a session: {e}", self.uri);
                if lost(&e) {
                    Failure::Lost(m)
                } else {
                    Failure::Other(m)
                }
            })?,
        };
        let signed = match s.sign(mechanism, key, data) {
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserNotLoggedIn, _)) => {
                match s.login(UserType::User, self.pin.as_ref()) {
                    Ok(()) => s.sign(mechanism, key, data),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        match signed {
            Ok(sig) => {
                if let Some(l) = crate::sync::lock(&self.live).as_mut() {
                    if l.generation == c.generation {
                        l.sessions.push(s);
                    }
                }
                Ok(sig)
            }
            Err(e) if lost(&e) => {
                drop(s);
                self.drop_live(&c);
                Err(Failure::Lost(format!(
                    "{}: signing on the token: {e}",
                    self.uri
                )))
            }
            // A session that failed is dropped, not pooled.
            Err(e) => Err(Failure::Other(format!(
                "{}: signing on the token: {e}",
                self.uri
            ))),
        }
    }

    /// Signs; a token gone (or come back, its handles stale) is looked
    /// for again, its backoff allowing, and the signature tried once more.
    fn sign_with(&self, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>, String> {
        match self.try_sign(mechanism, data) {
            Ok(sig) => Ok(sig),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Lost(e)) => {
                if crate::sync::lock(&self.health).up {
                    // The first loss: looked for at once (a module
                    // initialised again by another key is found so).
                    self.went_away_quietly(&e);
                }
                if !self.look_again() {
                    let h = crate::sync::lock(&self.health);
                    return Err(h.error.clone().unwrap_or(e));
                }
                self.try_sign(mechanism, data).map_err(|f| match f {
                    Failure::Lost(e) | Failure::Other(e) => e,
                })
            }
        }
    }

    /// The error kept, the state not changed yet: a stale handle after
    /// another key initialised the module again is found at once, and is
    /// not worth telling; a look that fails tells.
    fn went_away_quietly(&self, why: &str) {
        crate::sync::lock(&self.health).error = Some(why.to_owned());
    }
}

impl Drop for TokenKey {
    /// Its sessions are closed only while their handles are still the
    /// module's (see [`Live::discard`]).
    fn drop(&mut self) {
        let c = crate::sync::read(&self.module.ctx);
        self.drop_live(&c);
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("uri", &self.uri)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl DeviceKey for TokenKey {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn sign_sha256(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match self.alg {
            Algorithm::RsaSha256 => self.sign_with(&Mechanism::Sha256RsaPkcs, data),
            // CKM_ECDSA signs a digest and answers r ‖ s, XML-DSig's form.
            Algorithm::EcdsaSha256 => {
                self.sign_with(&Mechanism::Ecdsa, &openssl::sha::sha256(data))
            }
        }
    }
}

/// The key of a token as rustls signs TLS handshakes with it (client or
/// server): RSA-PSS or PKCS#1 v1.5 with SHA-256, or ECDSA on P-256 with
/// the signature DER-encoded, as TLS writes it.
#[derive(Debug)]
struct TlsKey(Arc<TokenKey>);

#[derive(Debug)]
struct TlsSigner {
    key: Arc<TokenKey>,
    scheme: rustls::SignatureScheme,
}

impl rustls::sign::SigningKey for TlsKey {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        use rustls::SignatureScheme as S;
        let ours: &[S] = match self.0.alg {
            Algorithm::RsaSha256 => &[S::RSA_PSS_SHA256, S::RSA_PKCS1_SHA256],
            Algorithm::EcdsaSha256 if self.0.p256 => &[S::ECDSA_NISTP256_SHA256],
            Algorithm::EcdsaSha256 => &[],
        };
        let scheme = ours.iter().find(|s| offered.contains(s))?;
        Some(Box::new(TlsSigner {
            key: self.0.clone(),
            scheme: *scheme,
        }))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        match self.0.alg {
            Algorithm::RsaSha256 => rustls::SignatureAlgorithm::RSA,
            Algorithm::EcdsaSha256 => rustls::SignatureAlgorithm::ECDSA,
        }
    }
}

impl rustls::sign::Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        use rustls::SignatureScheme as S;
        let failed = |e: String| {
            tracing::error!(error = %e, "TLS handshake: the key's device failed");
            crate::metrics::seal_device_failed();
            rustls::Error::General(e)
        };
        match self.scheme {
            S::RSA_PSS_SHA256 => {
                let pss = PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32.into(),
                };
                self.key
                    .sign_with(&Mechanism::Sha256RsaPkcsPss(pss), message)
                    .map_err(failed)
            }
            S::RSA_PKCS1_SHA256 => self
                .key
                .sign_with(&Mechanism::Sha256RsaPkcs, message)
                .map_err(failed),
            _ => {
                let rs = self
                    .key
                    .sign_with(&Mechanism::Ecdsa, &openssl::sha::sha256(message))
                    .map_err(failed)?;
                let der = ecdsa_der(&rs)
                    .map_err(|e| failed(format!("{}: the signature: {e}", self.key.uri)))?;
                Ok(der)
            }
        }
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        self.scheme
    }
}

/// An ECDSA signature `r ‖ s` (PKCS#11's form) as DER (TLS's and
/// OpenSSL's).
fn ecdsa_der(rs: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let half = rs.len() / 2;
    let r = openssl::bn::BigNum::from_slice(&rs[..half])?;
    let s = openssl::bn::BigNum::from_slice(&rs[half..])?;
    openssl::ecdsa::EcdsaSig::from_private_components(r, s)?.to_der()
}

/// The key a PKCS#11 URI names, as rustls signs with it, proven the key
/// of the chain's first certificate by a probe signature.
pub fn tls_signing_key(
    chain: &[rustls::pki_types::CertificateDer<'static>],
    uri: &str,
) -> Result<Arc<dyn rustls::sign::SigningKey>, String> {
    let token = TokenKey::open(uri).map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("no certificate")?;
    let pem = openssl::x509::X509::from_der(leaf)
        .and_then(|c| c.to_pem())
        .map_err(|e| format!("the certificate: {e}"))?;
    // The same proof as the seal's: the token signs, the certificate's
    // public key verifies.
    crate::xml::SigningKey::from_device(token.clone(), &pem)
        .map_err(|e| format!("{}: {e}", redact(uri)))?;
    bind_to(&token, &pem);
    Ok(Arc::new(TlsKey(token)))
}

/// Makes a key pair of `kind` on the token the URI names, with the URI's
/// label (and id), and answers its public key. The private key is
/// sensitive and can never be extracted; it signs and does nothing else.
/// A key under that label already there is refused, or replaced when
/// `replace`.
pub fn generate(
    uri: &str,
    kind: KeyKind,
    replace: bool,
) -> Result<openssl::pkey::PKey<openssl::pkey::Public>, Pkcs11Error> {
    let Opened {
        u, shown, session, ..
    } = Opened::new(uri, true)?;
    let fail = |what: &str, e: &dyn std::fmt::Display| Pkcs11Error::Token {
        uri: shown.clone(),
        detail: format!("{what}: {e}"),
    };
    let mut there = Vec::new();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        there.extend(
            session
                .find_objects(&template(&u, class))
                .map_err(|e| fail("looking for keys", &e))?,
        );
    }
    if !there.is_empty() {
        if !replace {
            return Err(Pkcs11Error::Token {
                uri: shown,
                detail: "a key with this label is on the token already; use --force to replace it"
                    .into(),
            });
        }
        for o in there {
            session
                .destroy_object(o)
                .map_err(|e| fail("removing the old key", &e))?;
        }
    }
    let label = u.object.clone().unwrap_or_default().into_bytes();
    let id = u.id.clone().unwrap_or_else(|| label.clone());
    let common = [
        Attribute::Token(true),
        Attribute::Label(label),
        Attribute::Id(id),
    ];
    let mut public = common.to_vec();
    public.push(Attribute::Verify(true));
    let mut private = common.to_vec();
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]);
    let mechanism = match kind {
        KeyKind::Rsa2048 => {
            public.push(Attribute::ModulusBits(2048.into()));
            public.push(Attribute::PublicExponent(vec![1, 0, 1]));
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyKind::EcP256 => {
            public.push(Attribute::EcParams(P256.to_vec()));
            Mechanism::EccKeyPairGen
        }
    };
    let (pub_handle, _) = session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| fail("making the key pair", &e))?;
    let read = |t: AttributeType| {
        session
            .get_attributes(pub_handle, &[t])
            .map_err(|e| fail("reading the public key", &e))
    };
    let bad = |e: openssl::error::ErrorStack| fail("the public key", &e);
    match kind {
        KeyKind::Rsa2048 => {
            let (mut n, mut e) = (Vec::new(), Vec::new());
            for a in read(AttributeType::Modulus)?
                .into_iter()
                .chain(read(AttributeType::PublicExponent)?)
            {
                match a {
                    Attribute::Modulus(v) => n = v,
                    Attribute::PublicExponent(v) => e = v,
                    _ => {}
                }
            }
            let rsa = openssl::rsa::Rsa::from_public_components(
                openssl::bn::BigNum::from_slice(&n).map_err(bad)?,
                openssl::bn::BigNum::from_slice(&e).map_err(bad)?,
            )
            .map_err(bad)?;
            openssl::pkey::PKey::from_rsa(rsa).map_err(bad)
        }
        KeyKind::EcP256 => {
            let point = read(AttributeType::EcPoint)?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(v) => Some(v),
                    _ => None,
                })
                .unwrap_or_default();
            let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .map_err(bad)?;
            let mut ctx = openssl::bn::BigNumContext::new().map_err(bad)?;
            // CKA_EC_POINT is the point in a DER OCTET STRING; some
            // modules give it bare.
            let bare = match point.as_slice() {
                [0x04, n, rest @ ..] if *n as usize == rest.len() => rest,
                p => p,
            };
            let p = openssl::ec::EcPoint::from_bytes(&group, bare, &mut ctx).map_err(bad)?;
            let ec = openssl::ec::EcKey::from_public_key(&group, &p).map_err(bad)?;
            openssl::pkey::PKey::from_ec_key(ec).map_err(bad)
        }
    }
}

/// Binds a key proven against the certificate `cert_pem` to its public key.
fn bind_to(token: &TokenKey, cert_pem: &[u8]) {
    if let Ok(public) = openssl::x509::X509::from_pem(cert_pem).and_then(|c| c.public_key()) {
        token.bind(public);
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
        let key = crate::xml::SigningKey::from_device(token.clone(), cert_pem)
            .map_err(|e| format!("{}: {e}", redact(&text)))?;
        bind_to(&token, cert_pem);
        return Ok(key);
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
