//! The dashboard's words in English, Serbian (Latin) and Hungarian (the
//! languages themselves are `crate::lang`), and which of them a browser
//! asked for.

use super::*;

pub use crate::lang::Lang;

/// The words of the dashboard: English, Serbian (Latin), Hungarian.
pub(super) fn t(lang: Lang, key: &str) -> &'static str {
    let [en, sr, hu]: [&'static str; 3] = match key {
        "title" => [
            "Gateway console",
            "Konzola mrežnog prolaza",
            "Átjáró konzol",
        ],
        "overview" => ["Overview", "Pregled", "Áttekintés"],
        "deadlines" => ["ZUP deadlines", "Rokovi po ZUP-u", "ÁKE határidők"],
        "audit" => ["Audit", "Revizija", "Napló"],
        "logout" => ["Sign out", "Odjava", "Kilépés"],
        "login" => ["Sign in", "Prijava", "Belépés"],
        "token" => [
            "Admin token",
            "Administratorski token",
            "Adminisztrátori token",
        ],
        "login-failed" => [
            "That is not an admin token.",
            "To nije administratorski token.",
            "Ez nem adminisztrátori token.",
        ],
        "registries" => ["Registries", "Registri", "Nyilvántartások"],
        "queue" => [
            "Requests by state",
            "Zahtevi po stanju",
            "Kérelmek állapot szerint",
        ],
        "breaker" => ["Breaker", "Prekidač", "Megszakító"],
        "closed" => ["closed", "zatvoren", "zárva"],
        "open" => ["open", "otvoren", "nyitva"],
        "half-open" => ["half-open", "poluotvoren", "félig nyitva"],
        "paused" => ["paused", "pauzirano", "szüneteltetve"],
        "maintenance" => ["maintenance", "održavanje", "karbantartás"],
        "active" => ["active", "aktivan", "aktív"],
        "in-flight" => ["in flight", "u toku", "folyamatban"],
        "waiting" => ["waiting", "čeka", "várakozik"],
        "last-ok" => ["last success", "poslednji uspeh", "utolsó siker"],
        "last-error" => ["last error", "poslednja greška", "utolsó hiba"],
        "certs" => ["certificates", "sertifikati", "tanúsítványok"],
        "timestamp" => [
            "timestamp (RFC 3161)",
            "vremenski žig (RFC 3161)",
            "időbélyeg (RFC 3161)",
        ],
        "revocation" => [
            "revocation check",
            "provera opoziva",
            "visszavonás-ellenőrzés",
        ],
        "last-good" => [
            "last good answer",
            "poslednji ispravan odgovor",
            "utolsó jó válasz",
        ],
        "days" => ["days", "dana", "nap"],
        "pause" => ["Pause", "Pauziraj", "Szüneteltetés"],
        "resume" => ["Resume", "Nastavi", "Folytatás"],
        "retry-dead" => ["Retry dead", "Ponovi neuspele", "Sikertelenek újra"],
        "throughput" => [
            "Attempts per minute, last hour",
            "Pokušaji po minutu, poslednji sat",
            "Próbálkozások percenként, utolsó óra",
        ],
        "latency" => [
            "Average latency (ms), last hour",
            "Prosečno kašnjenje (ms), poslednji sat",
            "Átlagos késleltetés (ms), utolsó óra",
        ],
        "stuck" => [
            "Stuck and dead requests",
            "Zaglavljeni i neuspeli zahtevi",
            "Elakadt és sikertelen kérelmek",
        ],
        "none" => ["Nothing here.", "Ništa.", "Nincs ilyen."],
        "id" => ["Request", "Zahtev", "Kérelem"],
        "state" => ["State", "Stanje", "Állapot"],
        "service" => ["Service", "Usluga", "Szolgáltatás"],
        "case" => ["Case", "Predmet", "Ügy"],
        "age" => ["Age", "Starost", "Kor"],
        "error" => ["Error", "Greška", "Hiba"],
        "actions" => ["Actions", "Radnje", "Műveletek"],
        "retry" => ["Retry", "Ponovi", "Újra"],
        "cancel" => ["Cancel", "Otkaži", "Visszavonás"],
        "timeline" => ["Timeline", "Tok", "Idővonal"],
        "filed" => ["Filed", "Podnet", "Benyújtva"],
        "deadline" => ["Deadline", "Rok", "Határidő"],
        "official" => ["Official", "Službenik", "Ügyintéző"],
        "legal-basis" => ["Legal basis", "Pravni osnov", "Jogalap"],
        "purpose" => ["Purpose", "Svrha", "Cél"],
        "subject" => ["Subject", "Lice", "Érintett"],
        "attempt" => ["Attempt", "Pokušaj", "Próbálkozás"],
        "message-id" => ["message", "poruka", "üzenet"],
        "attachments" => ["Attachments", "Prilozi", "Mellékletek"],
        "file-name" => ["Name", "Naziv", "Név"],
        "content-type" => ["Type", "Tip", "Típus"],
        "size" => ["Bytes", "Bajtova", "Bájt"],
        "signed-document" => [
            "Signed document (X-Road)",
            "Potpisani dokument (X-Road)",
            "Aláírt dokumentum (X-Road)",
        ],
        "x-road-services" => [
            "Services at the security server",
            "Servisi na serveru bezbednosti",
            "Szolgáltatások a biztonsági szerveren",
        ],
        "not-asked-yet" => ["not asked yet", "još nije upitan", "még nem kérdeztük"],
        "could-not-ask" => [
            "could not be asked",
            "nije mogao biti upitan",
            "nem lehetett megkérdezni",
        ],
        "all-allowed" => [
            "all of ours allowed",
            "svi naši dozvoljeni",
            "mind engedélyezve",
        ],
        "not-allowed" => ["not allowed:", "nisu dozvoljeni:", "nem engedélyezett:"],
        "delivered" => ["Delivered", "Dostavljeno", "Kézbesítve"],
        "at-risk" => ["near its deadline", "blizu roka", "közel a határidőhöz"],
        "left" => ["left", "preostalo", "hátra"],
        "who" => [
            "Who used a person's data",
            "Ko je koristio podatke o licu",
            "Ki használta a személy adatait",
        ],
        "jmbg" => ["JMBG", "JMBG", "Személyi szám (JMBG)"],
        "search" => ["Search", "Traži", "Keresés"],
        "print" => ["Print", "Štampaj", "Nyomtatás"],
        "when" => ["When (UTC)", "Kada (UTC)", "Mikor (UTC)"],
        "action" => ["Action", "Radnja", "Művelet"],
        "verify" => [
            "Verify the audit trail",
            "Proveri revizioni trag",
            "Napló ellenőrzése",
        ],
        "intact" => [
            "The trail is intact",
            "Trag je neoštećen",
            "A napló sértetlen",
        ],
        "broken" => ["The trail is BROKEN", "Trag je OŠTEĆEN", "A napló SÉRÜLT"],
        "entries" => ["entries", "unosa", "bejegyzés"],
        "done" => ["Done", "Urađeno", "Kész"],
        "welcome" => ["Welcome", "Dobro došli", "Isten hozta"],
        "oldest" => [
            "oldest open request",
            "najstariji otvoren zahtev",
            "legrégebbi nyitott kérelem",
        ],
        "back" => [
            "Back to the overview",
            "Nazad na pregled",
            "Vissza az áttekintéshez",
        ],
        _ => [""; 3],
    };
    lang.pick([en, sr, hu])
}

/// A problem's title (by its kind, as in problem+json's `type`) in
/// Serbian or Hungarian; None in English, whose titles are the problems'
/// own, or for a kind not translated.
pub(super) fn problem_title(lang: Lang, kind: &str) -> Option<&'static str> {
    let [sr, hu]: [&'static str; 2] = match kind {
        "unauthorized" => [
            "Nedostaje ili je nepoznat token",
            "Hiányzó vagy ismeretlen token",
        ],
        "forbidden" => [
            "Nije dozvoljeno ovom klijentu",
            "Ennek az ügyfélnek nem engedélyezett",
        ],
        "not-found" => ["Nema takvog resursa", "Nincs ilyen erőforrás"],
        "malformed-json" => ["Neispravno telo zahteva", "Hibás kéréstörzs"],
        "unsupported-media-type" => ["Nepodržan tip sadržaja", "Nem támogatott tartalomtípus"],
        "state-conflict" => [
            "Nije moguće u ovom stanju",
            "Ebben az állapotban nem lehetséges",
        ],
        "idempotency-key-reused" => [
            "Idempotency-Key je već upotrebljen",
            "Az Idempotency-Key már használatban volt",
        ],
        "body-too-large" => ["Telo zahteva je preveliko", "A kérés törzse túl nagy"],
        "rate-limited" => ["Previše zahteva", "Túl sok kérés"],
        "method-not-allowed" => ["Metoda nije dozvoljena", "A metódus nem engedélyezett"],
        "validation-failed" => ["Neispravan zahtev", "Érvénytelen kérés"],
        "store-unavailable" => ["Privremeno nedostupno", "Átmenetileg nem elérhető"],
        "insufficient-storage" => ["Nedovoljno prostora na disku", "Nincs elég tárhely"],
        "store-damaged" => ["Skladište je oštećeno", "A tároló sérült"],
        "tsa-unavailable" => [
            "Služba vremenskih žigova je nedostupna",
            "Az időbélyeg-szolgáltató nem elérhető",
        ],
        "internal" => ["Interna greška", "Belső hiba"],
        _ => return None,
    };
    match lang {
        Lang::En => None,
        Lang::Sr => Some(sr),
        Lang::Hu => Some(hu),
    }
}

pub(super) fn state_word(lang: Lang, s: RState) -> &'static str {
    let [en, sr, hu] = match s {
        RState::Queued => ["queued", "u redu", "sorban"],
        RState::Sending => ["sending", "šalje se", "küldés alatt"],
        RState::Awaiting => ["awaiting", "čeka odgovor", "válaszra vár"],
        RState::Retrying => ["retrying", "ponavlja se", "újrapróbálás"],
        RState::Fetched => ["fetched", "preuzeto", "letöltve"],
        RState::Delivered => ["delivered", "dostavljeno", "kézbesítve"],
        RState::Dead => ["dead", "neuspelo", "sikertelen"],
        RState::Cancelled => ["cancelled", "otkazano", "visszavonva"],
    };
    lang.pick([en, sr, hu])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each problem the API can answer, once (the match below fails to
    /// compile when a kind is added and not listed).
    fn every_problem() -> Vec<ApiError> {
        let s = String::new;
        let all = vec![
            ApiError::Unauthorized(s()),
            ApiError::Forbidden(s()),
            ApiError::NotFound(s()),
            ApiError::BadJson(s()),
            ApiError::MediaType,
            ApiError::Invalid(Vec::new()),
            ApiError::Conflict(s()),
            ApiError::StateConflict(s()),
            ApiError::TooLarge(0),
            ApiError::TooMany(0),
            ApiError::MethodNotAllowed,
            ApiError::Unavailable(s()),
            ApiError::StorageFull(s()),
            ApiError::StoreDamaged(s()),
            ApiError::TsaUnavailable(s()),
            ApiError::Internal(s()),
        ];
        for e in &all {
            match e {
                ApiError::Unauthorized(_)
                | ApiError::Forbidden(_)
                | ApiError::NotFound(_)
                | ApiError::BadJson(_)
                | ApiError::MediaType
                | ApiError::Invalid(_)
                | ApiError::Conflict(_)
                | ApiError::StateConflict(_)
                | ApiError::TooLarge(_)
                | ApiError::TooMany(_)
                | ApiError::MethodNotAllowed
                | ApiError::Unavailable(_)
                | ApiError::StorageFull(_)
                | ApiError::StoreDamaged(_)
                | ApiError::TsaUnavailable(_)
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    /// The dashboard's error page says what went wrong in each of its
    /// languages: every problem's title is translated (English is the
    /// problem's own title).
    #[test]
    fn every_problem_has_its_title_in_each_language() {
        for e in every_problem() {
            assert_eq!(problem_title(Lang::En, e.kind()), None, "{}", e.kind());
            for l in [Lang::Sr, Lang::Hu] {
                let title = problem_title(l, e.kind());
                assert!(
                    title.is_some_and(|t| !t.is_empty() && t != e.title()),
                    "{} in {l:?}: {title:?}",
                    e.kind()
                );
            }
        }
    }
}
