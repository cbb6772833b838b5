//! The commands that work on this machine: the store offline (export,
//! import), development certificates, identifiers, XML, one exchange with a
//! registry, and the simulator.

use std::io::{Read, Write};

use super::*;

pub(super) fn read_input(input: &Input) -> Result<Vec<u8>, Fail> {
    let mut buf = Vec::new();
    let res = if input.file == "-" {
        std::io::stdin()
            .take(input.max_size as u64 + 1)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(&input.file)
            .and_then(|f| f.take(input.max_size as u64 + 1).read_to_end(&mut buf))
    };
    res.map_err(failed(&input.file))?;
    if buf.len() > input.max_size {
        return Err(Fail::Invalid(format!(
            "{}: larger than the limit of {} bytes",
            input.file, input.max_size
        )));
    }
    Ok(buf)
}

pub(super) fn limits(input: &Input) -> Limits {
    Limits {
        max_size: input.max_size,
        max_text_len: input.max_size,
        ..Limits::default()
    }
}

pub(super) fn write_stdout(bytes: &[u8]) -> CmdResult {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(failed("standard output"))
}

/// The store a `store` command works on, and how to name it.
pub(super) async fn open_store(
    data_dir: &std::path::Path,
    url: Option<&str>,
) -> Result<(std::sync::Arc<dyn crate::store::QueueStore>, PathBuf), Fail> {
    let cfg = match url {
        Some(u) => {
            crate::config::StoreConfig::from_arg(u, &Default::default()).map_err(Fail::Invalid)?
        }
        None => crate::config::StoreConfig::default(),
    };
    let name = match &cfg.url {
        Some(u) => <tokio_postgres::Config as std::str::FromStr>::from_str(u)
            .map(|c| PathBuf::from(crate::store::postgres::display_url(&c)))
            .unwrap_or_else(|_| PathBuf::from("PostgreSQL")),
        None => data_dir.to_owned(),
    };
    let store = crate::store::open_configured(&cfg, data_dir)
        .await
        .map_err(|e| Fail::Failed(e.to_string()))?;
    Ok((store, name))
}

/// `store check`: the full check of a stopped sled store, printed.
fn store_check(data_dir: &std::path::Path, json: bool, url: Option<&str>) -> CmdResult {
    let (report, dir) = match url {
        None => {
            let dir = data_dir.join("store");
            let repair = crate::store::embedded::Repair::open(&dir)
                .map_err(|e| Fail::Failed(e.to_string()))?;
            (repair.check(), dir)
        }
        Some(url) => runtime()?.block_on(async {
            let (store, name) = open_store(data_dir, Some(url)).await?;
            let report = store
                .check()
                .await
                .map_err(|e| Fail::Failed(e.to_string()))?;
            let _ = store.close().await;
            Ok::<_, Fail>((report, name))
        })?,
    };
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(failed("the report"))?;
        println!("{text}");
    } else {
        let read: Vec<String> = report
            .read
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        println!("{}: read {}", dir.display(), read.join(", "));
        for d in &report.damage {
            println!("{:<14} {}: {}", d.tree, d.key, d.problem);
        }
        if report.problems as usize > report.damage.len() {
            println!(
                "… and {} more",
                report.problems as usize - report.damage.len()
            );
        }
    }
    if report.is_clean() {
        eprintln!("{}: no damage found", dir.display());
        Ok(())
    } else {
        Err(Fail::Code(
            1,
            format!(
                "{}: {} problem(s); `jumgw store salvage --out FILE` saves what is readable, `jumgw store import` restores it (or a backup) into a new data folder",
                dir.display(),
                report.problems
            ),
        ))
    }
}

/// `store salvage`: what is readable of a damaged store, as an export.
fn store_salvage(data_dir: &std::path::Path, out: &std::path::Path) -> CmdResult {
    let dir = data_dir.join("store");
    let (repair, how) = crate::store::embedded::Repair::open_for_salvage(&dir)
        .map_err(|e| Fail::Failed(e.to_string()))?;
    if let Some(how) = &how {
        eprintln!(
            "{}: {how}; a request may come back as it was earlier (it is then sent again: registries answer a repeated request id alike)",
            dir.display()
        );
    }
    let name = out.display().to_string();
    let f = std::fs::File::create(out).map_err(failed(&name))?;
    let mut w = std::io::BufWriter::new(f);
    let saved = repair
        .salvage(&mut w)
        .map_err(|e| Fail::Failed(format!("{name}: {e}")))?;
    for l in &saved.lost {
        println!("lost  {:<12} {}: {}", l.tree, l.key, l.problem);
    }
    let c = saved.counts;
    eprintln!(
        "{}: saved {} requests, {} documents, {} audit entries to {name}; {} thing(s) lost{}",
        dir.display(),
        c.requests,
        c.documents,
        c.audit,
        saved.lost.len(),
        if saved.lost.is_empty() {
            ""
        } else {
            " (listed above, and as `lost` lines in the export)"
        }
    );
    Ok(())
}

pub(super) fn store_command(cmd: StoreCommand) -> CmdResult {
    use crate::store::backup;
    match &cmd {
        StoreCommand::Check {
            data_dir,
            json,
            store,
        } => return store_check(data_dir, *json, store.as_deref()),
        StoreCommand::Salvage { data_dir, out } => return store_salvage(data_dir, out),
        _ => {}
    }
    runtime()?.block_on(async {
        let (dir, result) = match cmd {
            StoreCommand::Export {
                data_dir,
                out,
                url: Some(url),
                token,
                ..
            } => {
                let token = token.ok_or_else(|| {
                    Fail::Failed("--url needs an admin token (--token or JUMGW_TOKEN)".into())
                })?;
                let r = reqwest::Client::new()
                    .get(format!(
                        "{}/admin/v1/store/export",
                        url.trim_end_matches('/')
                    ))
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(failed(&url))?;
                if !r.status().is_success() {
                    let status = r.status();
                    return Err(Fail::Failed(format!(
                        "{url}: {status}: {}",
                        r.text().await.unwrap_or_default()
                    )));
                }
                let bytes = r.bytes().await.map_err(failed(&url))?;
                let n = bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| l.starts_with(b"{\"kind\":\"request\""))
                    .count();
                match &out {
                    Some(p) => {
                        std::fs::write(p, &bytes).map_err(failed(&p.display().to_string()))?
                    }
                    None => write_stdout(&bytes)?,
                }
                let count = |kind: &str| {
                    let prefix = format!("{{\"kind\":\"{kind}\"");
                    bytes
                        .split(|&b| b == b'\n')
                        .filter(|l| l.starts_with(prefix.as_bytes()))
                        .count()
                };
                (
                    data_dir,
                    crate::store::backup::Counts {
                        requests: n,
                        documents: count("document"),
                        audit: count("audit"),
                        lost: count("lost"),
                    },
                )
            }
            StoreCommand::Export {
                data_dir,
                out,
                url: None,
                store,
                ..
            } => {
                let (store, data_dir) = open_store(&data_dir, store.as_deref()).await?;
                let counts = match &out {
                    Some(p) => {
                        let f =
                            std::fs::File::create(p).map_err(failed(&p.display().to_string()))?;
                        let mut w = std::io::BufWriter::new(f);
                        backup::export(&*store, &mut w).await
                    }
                    None => {
                        let mut w = std::io::BufWriter::new(std::io::stdout());
                        backup::export(&*store, &mut w).await
                    }
                }
                .map_err(|e| Fail::Failed(e.to_string()))?;
                store
                    .close()
                    .await
                    .map_err(|e| Fail::Failed(e.to_string()))?;
                (data_dir, counts)
            }
            StoreCommand::Import {
                data_dir,
                file,
                store,
            } => {
                let (store, data_dir) = open_store(&data_dir, store.as_deref()).await?;
                let counts = if file == "-" {
                    backup::import(
                        &*store,
                        &mut std::io::BufReader::new(std::io::stdin().lock()),
                    )
                    .await
                } else {
                    let f = std::fs::File::open(&file).map_err(failed(&file))?;
                    backup::import(&*store, &mut std::io::BufReader::new(f)).await
                }
                .map_err(|e| Fail::Invalid(format!("{file}: {e}")))?;
                store
                    .close()
                    .await
                    .map_err(|e| Fail::Failed(e.to_string()))?;
                (data_dir, counts)
            }
            StoreCommand::Check { .. } | StoreCommand::Salvage { .. } => return Ok(()),
        };
        eprintln!(
            "{}: {} requests, {} documents, {} audit entries",
            dir.display(),
            result.requests,
            result.documents,
            result.audit
        );
        Ok(())
    })
}

pub(super) fn certs_init(
    dir: &std::path::Path,
    force: bool,
    sign: crate::pki::KeyKind,
    seal: Option<&str>,
) -> CmdResult {
    let written =
        crate::pki::init_dev_on(dir, force, sign, seal).map_err(|e| Fail::Failed(e.to_string()))?;
    for w in written {
        let shown = w.path.to_string_lossy();
        if crate::pki::pkcs11::is_uri(&shown) {
            println!("made on the token {}", crate::pki::pkcs11::redact(&shown));
            continue;
        }
        match w.expires {
            Some(e) => println!("wrote {}  (expires {e})", w.path.display()),
            None => println!("wrote {}", w.path.display()),
        }
    }
    if let Some(uri) = seal {
        println!("the gateway's keys are on the token; set");
        println!("  gateway.sign_key = {:?}", crate::pki::pkcs11::redact(uri));
        println!(
            "  gateway.tls_key = {:?}",
            crate::pki::pkcs11::redact(&crate::pki::tls_key_uri(uri))
        );
    }
    Ok(())
}

#[cfg(feature = "simulator")]
pub(super) fn simulate(
    config: &std::path::Path,
    listen: Option<String>,
    faults: Option<String>,
) -> CmdResult {
    let _logs = crate::daemon::logs::init(
        crate::config::LogFormat::Text,
        crate::config::DEFAULT_LOG_FILTER,
    );
    let mut cfg =
        crate::config::SimulatorConfig::load(config).map_err(|e| Fail::Failed(e.to_string()))?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(f) = faults {
        cfg.faults = f;
    }
    runtime()?.block_on(async {
        let sim = crate::sim::start(&cfg)
            .await
            .map_err(|e| Fail::Failed(e.to_string()))?;
        for (name, addr) in &sim.addrs {
            println!("{name} listening on https://{addr}/");
        }
        if let Some(a) = sim.x_road {
            println!("x-road security server listening on https://{a}/");
        }
        println!("control on http://{}/", sim.control);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        tokio::signal::ctrl_c().await.map_err(failed("signal"))?;
        drop(sim);
        Ok(())
    })
}

pub(super) fn exchange(a: ExchangeArgs) -> CmdResult {
    use crate::exchange::{Call, Exchange, Outcome};
    let cfg =
        crate::config::GatewayConfig::load(&a.config).map_err(|e| Fail::Failed(e.to_string()))?;
    let svc = cfg.services.get(&a.service).ok_or_else(|| {
        Fail::Failed(format!(
            "unknown service {:?}; known: {}",
            a.service,
            cfg.services.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    if svc.registry != a.registry {
        return Err(Fail::Failed(format!(
            "service {} belongs to registry {}, not {}",
            a.service, svc.registry, a.registry
        )));
    }
    let subject = crate::protocol::subject::Subject::from_parts(
        a.subject.jmbg.as_deref(),
        a.subject.pib.as_deref(),
        a.subject.mb.as_deref(),
        a.subject.ko.as_deref(),
        a.subject.sheet.as_deref(),
        a.subject.parcel.as_deref(),
    )
    .map_err(|e| Fail::Invalid(format!("invalid subject: {e}")))?;
    let schemas = a.schemas.clone().unwrap_or_else(xml::schema::default_dir);
    let id =
        a.id.clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let attempt = runtime()?.block_on(async {
        let ex = Exchange::new(&cfg, &schemas).map_err(|e| Fail::Failed(e.to_string()))?;
        ex.attempt(&Call {
            id: &id,
            service: &a.service,
            subject: &subject,
            case: &a.case,
            official: &a.official,
            legal_basis: &a.legal_basis,
            purpose: &a.purpose,
            ticket: a.ticket.as_deref(),
        })
        .await
        .map_err(|e| Fail::Failed(e.to_string()))
    })?;
    let code = match &attempt.outcome {
        Outcome::Document => 0,
        Outcome::Accepted { .. } => 3,
        Outcome::Retryable { .. } | Outcome::TicketLost { .. } => 4,
        Outcome::Permanent { .. } => 5,
        Outcome::Security { .. } => 6,
    };
    if code != 0 {
        let extra = match &attempt.outcome {
            Outcome::Accepted { .. } => {
                format!(" (request id {id}; poll with --id {id} --ticket TICKET)")
            }
            _ => String::new(),
        };
        return Err(Fail::Code(code, format!("{}{extra}", attempt.outcome)));
    }
    let bytes = attempt.response.unwrap_or_default();
    match a.out {
        Some(p) => std::fs::write(&p, &bytes).map_err(failed(&p.display().to_string()))?,
        None => write_stdout(&bytes)?,
    }
    eprintln!(
        "document from {} signed by {} in {} ms",
        a.registry,
        attempt.signer.unwrap_or_default(),
        attempt.duration.as_millis()
    );
    Ok(())
}

/// `jumgw deadline`: the last day of a ZUP limit, then why.
pub(super) fn deadline(from: &str, days: u32, json: bool) -> CmdResult {
    use crate::time::calendar;
    let day = chrono::NaiveDate::parse_from_str(from, "%Y-%m-%d")
        .ok()
        .filter(|d| d.format("%Y-%m-%d").to_string() == from)
        .ok_or_else(|| {
            Fail::Invalid(format!(
                "--from {from:?} is not a date written YYYY-MM-DD (e.g. 2026-03-02)"
            ))
        })?;
    // The holidays law as it stands (Armistice Day a non-working day)
    // is the one of 2012 and later: an answer for an earlier date would
    // count by a law that did not apply then.
    if day < chrono::NaiveDate::from_ymd_opt(2012, 1, 1).unwrap_or(day) {
        return Err(Fail::Invalid(format!(
            "--from {from}: the calendar counts by the holidays law as it stands since 2012"
        )));
    }
    // Dates are written YYYY-MM-DD both ways: a limit that ends after
    // 9999 could not be.
    let l = calendar::limit(day, days)
        .filter(|l| l.last.format("%Y-%m-%d").to_string().len() == 10)
        .ok_or_else(|| Fail::Invalid(format!("{days} days from {from} is past the calendar")))?;
    if json {
        let moved: Vec<serde_json::Value> = l
            .moved_over
            .iter()
            .map(|(d, why)| serde_json::json!({"date": d.to_string(), "why": why.to_string()}))
            .collect();
        let v = serde_json::json!({
            "from": l.from.to_string(),
            "days": l.days,
            "counted": l.counted.to_string(),
            "last": l.last.to_string(),
            "moved_over": moved,
        });
        println!("{v}");
        return Ok(());
    }
    println!("{}", l.last);
    let start = l.from.succ_opt().unwrap_or(l.from);
    let (unit, reach) = if days == 1 {
        ("day", "reaches")
    } else {
        ("days", "reach")
    };
    println!(
        "{days} {unit} from {} (counted from {start}) {reach} {} ({})",
        l.from,
        l.counted,
        l.counted.format("%A")
    );
    for (d, why) in &l.moved_over {
        println!("{d} ({}): not a working day: {why}", d.format("%A"));
    }
    if !l.moved_over.is_empty() {
        println!(
            "so the limit ends on {} ({}), the next working day",
            l.last,
            l.last.format("%A")
        );
    }
    Ok(())
}

pub(super) fn ids_check(kind: IdKind, value: &str) -> CmdResult {
    let invalid = |e: ids::IdError| Fail::Invalid(format!("invalid: {e}"));
    let lines: Vec<String> = match kind {
        IdKind::Jmbg => {
            let j = ids::Jmbg::parse(value).map_err(invalid)?;
            let sex = match j.sex() {
                ids::Sex::Male => "male",
                ids::Sex::Female => "female",
            };
            vec![
                format!("valid JMBG {}", j.as_str()),
                format!("date of birth: {}", j.birth_date()),
                format!("region: {:02}", j.region()),
                format!("serial: {:03} ({sex})", j.serial()),
                format!("check digit: {}", &value[12..]),
            ]
        }
        IdKind::Pib => {
            let p = ids::Pib::parse(value).map_err(invalid)?;
            vec![
                format!("valid PIB {p}"),
                format!("check digit: {}", &value[8..]),
            ]
        }
        IdKind::Mb => {
            let m = ids::Mb::parse(value).map_err(invalid)?;
            vec![
                format!("valid MB {m}"),
                format!("check digit: {}", &value[7..]),
            ]
        }
        IdKind::Ko => {
            let k = ids::KoCode::parse(value).map_err(invalid)?;
            vec![
                format!("valid KO code {k}"),
                format!("check digit: {}", &value[5..]),
            ]
        }
        IdKind::Municipality => {
            let k = ids::MunicipalityCode::parse(value).map_err(invalid)?;
            vec![
                format!("valid municipality code {k}"),
                format!("check digit: {}", &value[4..]),
            ]
        }
        IdKind::Parcel => {
            let (ko, parcel) = match value.split_once(':') {
                Some((ko, p)) => (Some(ids::KoCode::parse(ko).map_err(invalid)?), p),
                None => (None, value),
            };
            let p = ids::ParcelNumber::parse(parcel).map_err(invalid)?;
            let mut v = vec![format!("valid parcel {p}")];
            if let Some(ko) = ko {
                v.push(format!("KO: {ko}"));
            }
            v.push(format!("number: {}", p.number));
            v.push(format!(
                "sub-number: {}",
                p.sub.map_or("none".to_owned(), |s| s.to_string())
            ));
            v
        }
        IdKind::Sheet => {
            let s = ids::SheetNumber::parse(value).map_err(invalid)?;
            vec![format!("valid property sheet number {}", s.0)]
        }
    };
    println!("{}", lines.join("\n"));
    Ok(())
}

pub(super) fn xml_command(cmd: XmlCommand) -> CmdResult {
    match cmd {
        XmlCommand::C14n {
            exclusive,
            with_comments,
            prefix_list,
            input,
        } => {
            let bytes = read_input(&input)?;
            let mut opts = c14n::Options {
                exclusive,
                with_comments,
                inclusive_prefixes: Vec::new(),
            };
            if let Some(l) = prefix_list {
                opts = opts.with_prefix_list(&l);
            }
            let out = c14n::WriteOutput {
                inner: std::io::BufWriter::new(std::io::stdout().lock()),
                error: None,
            };
            let mut out = c14n::canonicalize_into(&bytes, &opts, &limits(&input), out)
                .map_err(|e| Fail::Invalid(format!("{}: {e}", input.file)))?;
            if let Some(e) = out.error {
                return Err(failed("standard output")(e));
            }
            out.inner.flush().map_err(failed("standard output"))
        }
        XmlCommand::Sign {
            key,
            cert,
            alg,
            out,
            input,
        } => {
            let cert_pem = std::fs::read(&cert).map_err(failed(&cert.display().to_string()))?;
            let alg = alg.as_deref().and_then(xml::Algorithm::from_name);
            let k = if crate::pki::pkcs11::is_uri(&key.to_string_lossy()) {
                let k = crate::pki::pkcs11::signing_key(&key, &cert_pem).map_err(Fail::Failed)?;
                if alg.is_some_and(|a| a != k.algorithm()) {
                    return Err(Fail::Failed(format!(
                        "--alg does not fit the key on the token ({})",
                        k.algorithm().name()
                    )));
                }
                k
            } else {
                let key_pem = std::fs::read(&key).map_err(failed(&key.display().to_string()))?;
                xml::SigningKey::from_pem(&key_pem, &cert_pem, alg)
                    .map_err(|e| Fail::Failed(e.to_string()))?
            };
            let bytes = read_input(&input)?;
            let signed = xml::sign(&bytes, &k, &limits(&input))
                .map_err(|e| Fail::Invalid(format!("{}: {e}", input.file)))?;
            match out {
                Some(p) => std::fs::write(&p, signed).map_err(failed(&p.display().to_string())),
                None => write_stdout(&signed),
            }
        }
        XmlCommand::Verify {
            trust,
            crl,
            ocsp,
            ocsp_preproduced,
            max_age,
            input,
        } => {
            let pem = std::fs::read(&trust).map_err(failed(&trust.display().to_string()))?;
            let store = xml::TrustStore::from_pem(&pem).map_err(|e| Fail::Failed(e.to_string()))?;
            let bytes = read_input(&input)?;
            let v = xml::verify(&bytes, &store, &limits(&input))
                .map_err(|e| Fail::Invalid(format!("invalid: {e}")))?;
            let mut status = String::new();
            if crl.is_some() || ocsp.is_some() {
                let mut candidates = v.intermediates.clone();
                candidates.extend_from_slice(store.anchors());
                status =
                    revocation_of(&v.signer, &candidates, crl, ocsp, ocsp_preproduced, max_age)?;
            }
            println!(
                "valid {} signature by {}{status}",
                v.algorithm.name(),
                v.signer_subject()
            );
            Ok(())
        }
        XmlCommand::Validate { schemas, input } => {
            let dir = schemas.unwrap_or_else(xml::schema::default_dir);
            let v = xml::schema::Validator::start(&dir, limits(&input))
                .map_err(|e| Fail::Failed(e.to_string()))?;
            let bytes = read_input(&input)?;
            v.validate(&bytes)
                .map_err(|e| Fail::Invalid(format!("{}: {e}", input.file)))?;
            println!("{}: valid", input.file);
            Ok(())
        }
    }
}

/// A `NAME=VALUE` option's two halves, both non-empty; `expected` says
/// the form in the refusal.
fn named<'a>(spec: &'a str, flag: &str, expected: &str) -> Result<(&'a str, &'a str), Fail> {
    spec.split_once('=')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| Fail::Invalid(format!("{flag} {spec:?}: expected {expected}")))
}

/// `xml verify --crl/--ocsp`: the signer's status from each source given,
/// each one alone (no cache, no policy): revoked or not established is
/// invalid (exit 1), a source that cannot be used a failure (exit 2).
fn revocation_of(
    signer: &openssl::x509::X509,
    candidates: &[openssl::x509::X509],
    crl: Option<std::path::PathBuf>,
    ocsp: Option<String>,
    ocsp_preproduced: bool,
    max_age: std::time::Duration,
) -> Result<String, Fail> {
    use crate::pki::revocation::{self, Checker, Freshness, RevocationError, Sources, State};
    let issuer = revocation::issuer_of(signer, candidates).ok_or_else(|| {
        Fail::Invalid("the signer's issuer is not among the trusted certificates".into())
    })?;
    let mut said = String::new();
    let mut asks = Vec::new();
    if let Some(c) = crl {
        asks.push((
            "CRL",
            Sources {
                crl: Some(c.display().to_string()),
                ..Sources::default()
            },
        ));
    }
    if let Some(o) = ocsp {
        asks.push((
            "OCSP",
            Sources {
                // `aia`: the certificate's own responder.
                ocsp_url: (o != "aia").then_some(o),
                ocsp_preproduced,
                ..Sources::default()
            },
        ));
    }
    for (what, sources) in asks {
        let checker = Checker::default().with_freshness(Freshness {
            max_age,
            ..Freshness::default()
        });
        let got = runtime()?.block_on(async {
            if what == "OCSP" {
                checker.ocsp_only(signer, &issuer, &sources).await
            } else {
                checker.crl_only(signer, &issuer, &sources).await
            }
        });
        match got {
            Ok(a) => match a.state {
                State::Good => {
                    said.push_str(&format!(
                        "; not revoked ({what}, {})",
                        crate::time::rfc3339_secs(a.this_update_ms)
                    ));
                }
                State::Revoked { at_ms, .. } => {
                    return Err(Fail::Invalid(format!(
                        "invalid: the signer's certificate is revoked since {} ({what})",
                        crate::time::rfc3339_secs(at_ms)
                    )))
                }
                State::Unknown => {
                    return Err(Fail::Invalid(format!(
                        "invalid: the signer's certificate is unknown to the responder ({what})"
                    )))
                }
            },
            Err(e @ (RevocationError::BadSignature(_) | RevocationError::Stale(_))) => {
                return Err(Fail::Invalid(format!("invalid: {what}: {e}")))
            }
            Err(e) => return Err(Fail::Failed(format!("{what}: {e}"))),
        }
    }
    Ok(said)
}

/// `jumgw dossier verify`: the report, a line per finding; exit 1 unless
/// every one is valid.
pub(super) fn dossier_verify(
    file: &std::path::Path,
    trust: &[PathBuf],
    registry_ca: &[String],
    registry_signer: &[String],
    max_total: u64,
    json: bool,
) -> CmdResult {
    // Opened, not read whole: the container is read streaming.
    let opened = std::fs::File::open(file).map_err(failed(&file.display().to_string()))?;
    let mut registry_cas = std::collections::BTreeMap::new();
    for spec in registry_ca {
        let (name, path) = named(spec, "--registry-ca", "NAME=FILE.pem")?;
        let pem = std::fs::read(path).map_err(failed(path))?;
        if openssl::x509::X509::stack_from_pem(&pem).map_or(true, |s| s.is_empty()) {
            return Err(Fail::Invalid(format!(
                "--registry-ca {name}={path}: holds no PEM certificate"
            )));
        }
        registry_cas
            .entry(name.to_owned())
            .or_insert_with(Vec::new)
            .extend(pem.into_iter().chain(*b"\n"));
    }
    let mut registry_signers = std::collections::BTreeMap::new();
    for spec in registry_signer {
        let (name, pin) = named(
            spec,
            "--registry-signer",
            "NAME=PIN (a subject or a SHA-256)",
        )?;
        let pin = crate::evidence::verify::SignerPin::parse(pin)
            .map_err(|e| Fail::Invalid(format!("--registry-signer {name}: {e}")))?;
        registry_signers
            .entry(name.to_owned())
            .or_insert_with(Vec::new)
            .push(pin);
    }
    let pem = if trust.is_empty() {
        None
    } else {
        let mut pem = Vec::new();
        for t in trust {
            pem.extend(std::fs::read(t).map_err(failed(&t.display().to_string()))?);
            pem.push(b'\n');
        }
        Some(pem)
    };
    let report = crate::evidence::verify::verify_file(
        std::io::BufReader::new(opened),
        &crate::evidence::verify::Options {
            trust: pem,
            registry_cas,
            registry_signers,
            limits: crate::evidence::container::Limits { max_total },
        },
    );
    // Written, not printed: a reader that stops early (`| head`) closes
    // the pipe, which is no reason to panic.
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    if json {
        text = serde_json::to_string_pretty(&report).map_err(failed("the report"))?;
        text.push('\n');
    } else {
        text.push_str(&format!(
            "dossier {}\ntrust: {}\n",
            file.display(),
            report.trust
        ));
        for f in &report.findings {
            let v = match f.verdict {
                crate::evidence::verify::Verdict::Valid => "valid",
                crate::evidence::verify::Verdict::Invalid => "INVALID",
                crate::evidence::verify::Verdict::Unverifiable => "NOT VERIFIABLE",
            };
            text.push_str(&format!("{v:<15} {}: {}\n", f.file, f.detail));
        }
        if report.holds() {
            text.push_str("the dossier holds: every check passed\n");
        }
    }
    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
    if report.holds() {
        Ok(())
    } else {
        Err(Fail::Code(
            1,
            "the dossier does not hold (see the report)".into(),
        ))
    }
}

/// `jumgw config check`: exit 0 and the effective configuration, or exit 1
/// with the file, the key and the problem.
pub(super) fn config_check(
    config: &std::path::Path,
    data_dir: &std::path::Path,
    schemas: Option<PathBuf>,
    quiet: bool,
) -> CmdResult {
    let schemas = schemas.unwrap_or_else(xml::schema::default_dir);
    let cfg = crate::daemon::check::check(config, data_dir, &schemas).map_err(Fail::Invalid)?;
    // Reported, never a failure: the security server enforces access.
    for line in runtime()?.block_on(crate::daemon::check::x_road_services(&cfg, &schemas)) {
        eprintln!("{line}");
    }
    if quiet {
        return Ok(());
    }
    let text = format!(
        "# {}: valid; in effect (defaults filled in, secrets masked):\n{}",
        config.display(),
        crate::daemon::check::effective(&cfg)
    );
    write_stdout(text.as_bytes())
}

/// A size as `--max-total` takes it: bytes, or a number with KiB, MiB,
/// GiB (or KB, MB, GB, powers of ten).
pub(super) fn byte_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 512MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(scale)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{s:?}: not a size above zero"))
}
