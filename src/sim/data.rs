//! A deterministic synthetic population for the simulator: citizens with
//! valid JMBGs and Serbian and Hungarian names (Bečej is bilingual), their
//! births and citizenship, parcels and property sheets in the five Bečej
//! KOs with owners whose shares sum to 1, and taxpayers. The examples of
//! IDENTIFIERS.md always exist.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ids::{jmbg_check_digit, mod11_check_digit, pib_check_digit};
use crate::protocol::envelope::esc;

pub const EXAMPLE_JMBG: &str = "0512981717776";
pub const EXAMPLE_PIB: &str = "101134702";
pub const EXAMPLE_MB: &str = "07350767";
pub const EXAMPLE_KO: &str = "803472";
pub const EXAMPLE_SHEET: u32 = 1520;
pub const EXAMPLE_PARCEL: &str = "1234/5";

pub const KOS: [(&str, &str); 5] = [
    ("803472", "Bečej"),
    ("803456", "Bačko Gradište"),
    ("803464", "Bačko Petrovo Selo"),
    ("803570", "Mileševo"),
    ("803685", "Radičević"),
];

const FIRST_F: [&str; 10] = [
    "Jelena",
    "Milica",
    "Ana",
    "Marija",
    "Dragana",
    "Erzsébet",
    "Katalin",
    "Ilona",
    "Zsófia",
    "Jovana",
];
const FIRST_M: [&str; 10] = [
    "Đorđe", "Nikola", "Milan", "Stefan", "Dušan", "István", "László", "Ferenc", "Zoltán", "Miloš",
];
const LAST: [&str; 12] = [
    "Kovačević",
    "Petrović",
    "Jovanović",
    "Nikolić",
    "Đurić",
    "Šarić",
    "Kovács",
    "Szabó",
    "Tóth",
    "Nagy",
    "Horváth",
    "Varga",
];
const STREETS: [&str; 8] = [
    "Zelena",
    "Glavna",
    "Zmaj Jovina",
    "Petőfi Sándora",
    "Novosadska",
    "Branka Radičevića",
    "Dunavska",
    "Šumadijska",
];
const PLACES: [&str; 5] = [
    "Bečej",
    "Bačko Gradište",
    "Bačko Petrovo Selo",
    "Mileševo",
    "Radičević",
];

#[derive(Debug, Clone)]
pub struct Citizen {
    pub jmbg: String,
    pub first: String,
    pub last: String,
    pub female: bool,
    pub birth: (u32, u32, u32),
    pub place: String,
    pub father: (String, String),
    pub mother: (String, String),
    pub entry: (u32, u32),
    pub street: String,
    pub number: u32,
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub mb: String,
    pub pib: String,
    pub name: String,
    pub debt_para: u64,
}

#[derive(Debug, Clone)]
pub enum Owner {
    Person(usize),
    Entity(usize),
}

#[derive(Debug, Clone)]
pub struct Parcel {
    pub number: String,
    pub area: u32,
    pub land_use: &'static str,
    pub class: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Sheet {
    pub ko: usize,
    pub number: u32,
    pub parcels: Vec<Parcel>,
    /// Owners and their shares as (numerator, denominator); they sum to 1.
    pub owners: Vec<(Owner, u32, u32)>,
    pub building: Option<(u32, u32)>,
    pub mortgage: Option<u64>,
}

/// The whole synthetic world, built from a seed.
pub struct Population {
    pub citizens: Vec<Citizen>,
    pub entities: Vec<Entity>,
    pub sheets: Vec<Sheet>,
    by_jmbg: BTreeMap<String, usize>,
    by_pib: BTreeMap<String, usize>,
    by_mb: BTreeMap<String, usize>,
    by_sheet: BTreeMap<(String, u32), usize>,
    by_parcel: BTreeMap<(String, String), usize>,
}

fn digits_str(d: &[u8]) -> String {
    d.iter().map(|x| (b'0' + x) as char).collect()
}

fn jmbg(
    rng: &mut StdRng,
    female: bool,
    taken: &BTreeMap<String, usize>,
) -> (String, (u32, u32, u32)) {
    loop {
        let y = rng.random_range(1940..=2008u32);
        let m = rng.random_range(1..=12u32);
        let d = rng.random_range(1..=28u32);
        let rr = rng.random_range(80..=89u32);
        let bbb = if female {
            rng.random_range(500..1000u32)
        } else {
            rng.random_range(0..500u32)
        };
        let body = format!("{d:02}{m:02}{:03}{rr:02}{bbb:03}", y % 1000);
        let ds: Vec<u8> = body.bytes().map(|b| b - b'0').collect();
        let s: u32 = ds
            .iter()
            .zip([7, 6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2])
            .map(|(&a, w)| a as u32 * w)
            .sum();
        // Remainder 1 maps to check digit 0 like remainder 0; avoid issuing
        // those, as real registries do.
        if s % 11 == 1 {
            continue;
        }
        let j = format!("{body}{}", jmbg_check_digit(&ds));
        if !taken.contains_key(&j) {
            return (j, (y, m, d));
        }
    }
}

fn with_check(rng: &mut StdRng, n: usize, f: fn(&[u8]) -> u8) -> String {
    let mut d: Vec<u8> = (0..n - 1).map(|_| rng.random_range(0..10u8)).collect();
    if d[0] == 0 {
        d[0] = 1;
    }
    d.push(f(&d));
    digits_str(&d)
}

impl Population {
    pub fn generate(seed: u64, citizens: usize) -> Population {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = Population {
            citizens: Vec::new(),
            entities: Vec::new(),
            sheets: Vec::new(),
            by_jmbg: BTreeMap::new(),
            by_pib: BTreeMap::new(),
            by_mb: BTreeMap::new(),
            by_sheet: BTreeMap::new(),
            by_parcel: BTreeMap::new(),
        };
        p.add_citizen(Citizen {
            jmbg: EXAMPLE_JMBG.into(),
            first: "Jelena".into(),
            last: "Kovačević".into(),
            female: true,
            birth: (1981, 12, 5),
            place: "Bečej".into(),
            father: ("Đorđe".into(), "Kovačević".into()),
            mother: ("Erzsébet".into(), "Szabó".into()),
            entry: (3, 412),
            street: "Zelena".into(),
            number: 14,
        });
        for _ in 1..citizens.max(2) {
            let female = rng.random_bool(0.5);
            let (j, birth) = jmbg(&mut rng, female, &p.by_jmbg);
            let last = LAST[rng.random_range(0..LAST.len())].to_string();
            let c = Citizen {
                jmbg: j,
                first: if female {
                    FIRST_F[rng.random_range(0..10)]
                } else {
                    FIRST_M[rng.random_range(0..10)]
                }
                .into(),
                last: last.clone(),
                female,
                birth,
                place: PLACES[rng.random_range(0..PLACES.len())].into(),
                father: (FIRST_M[rng.random_range(0..10)].into(), last),
                mother: (
                    FIRST_F[rng.random_range(0..10)].into(),
                    LAST[rng.random_range(0..LAST.len())].into(),
                ),
                entry: (rng.random_range(1..20), rng.random_range(1..900)),
                street: STREETS[rng.random_range(0..STREETS.len())].into(),
                number: rng.random_range(1..120),
            };
            p.add_citizen(c);
        }
        p.add_entity(Entity {
            mb: EXAMPLE_MB.into(),
            pib: EXAMPLE_PIB.into(),
            name: "Poljoprivredna zadruga Bečej".into(),
            debt_para: 4_821_055,
        });
        for i in 0..(citizens / 10).max(5) {
            let mb = with_check(&mut rng, 8, mod11_check_digit);
            let pib = with_check(&mut rng, 9, pib_check_digit);
            if p.by_mb.contains_key(&mb) || p.by_pib.contains_key(&pib) {
                continue;
            }
            let debt = if rng.random_bool(0.7) {
                0
            } else {
                rng.random_range(100..10_000_000u64)
            };
            let name = format!(
                "{} {} d.o.o.",
                ["Tisa", "Bačka", "Agro", "Gradnja", "Vojvodina"][i % 5],
                LAST[i % LAST.len()]
            );
            p.add_entity(Entity {
                mb,
                pib,
                name,
                debt_para: debt,
            });
        }
        // The example sheet: two people and the cooperative, 1/2 + 1/4 + 1/4.
        p.add_sheet(Sheet {
            ko: 0,
            number: EXAMPLE_SHEET,
            parcels: vec![
                Parcel {
                    number: EXAMPLE_PARCEL.into(),
                    area: 612,
                    land_use: "zemljište pod zgradom",
                    class: None,
                },
                Parcel {
                    number: "1234/6".into(),
                    area: 1480,
                    land_use: "voćnjak",
                    class: Some(3),
                },
            ],
            owners: vec![
                (Owner::Person(0), 1, 2),
                (Owner::Person(1), 1, 4),
                (Owner::Entity(0), 1, 4),
            ],
            building: Some((148, 2)),
            mortgage: Some(350_000_000),
        });
        let uses = [
            "njiva", "vrt", "voćnjak", "vinograd", "livada", "pašnjak", "šuma",
        ];
        let shares: [&[(u32, u32)]; 4] = [
            &[(1, 1)],
            &[(1, 2), (1, 2)],
            &[(1, 2), (1, 4), (1, 4)],
            &[(1, 3), (2, 3)],
        ];
        let n_sheets = (citizens / 2).max(10);
        for s in 0..n_sheets {
            let ko = s % KOS.len();
            let number = 100 + s as u32;
            if p.by_sheet.contains_key(&(KOS[ko].0.to_string(), number)) {
                continue;
            }
            let base = 2000 + s as u32 * 3;
            let parcels = (0..rng.random_range(1..=3))
                .map(|k| Parcel {
                    number: if k == 0 {
                        base.to_string()
                    } else {
                        format!("{base}/{k}")
                    },
                    area: rng.random_range(200..20_000),
                    land_use: uses[rng.random_range(0..uses.len())],
                    class: Some(rng.random_range(1..=8)),
                })
                .collect();
            let split = shares[rng.random_range(0..shares.len())];
            let owners = split
                .iter()
                .map(|&(a, b)| {
                    let o = if rng.random_bool(0.85) {
                        Owner::Person(rng.random_range(0..p.citizens.len()))
                    } else {
                        Owner::Entity(rng.random_range(0..p.entities.len()))
                    };
                    (o, a, b)
                })
                .collect();
            let building = rng
                .random_bool(0.4)
                .then(|| (rng.random_range(40..400), rng.random_range(1..=4)));
            let mortgage = rng
                .random_bool(0.15)
                .then(|| rng.random_range(100_000..50_000_000u64) * 100);
            p.add_sheet(Sheet {
                ko,
                number,
                parcels,
                owners,
                building,
                mortgage,
            });
        }
        p
    }

    fn add_citizen(&mut self, c: Citizen) {
        self.by_jmbg.insert(c.jmbg.clone(), self.citizens.len());
        self.citizens.push(c);
    }

    fn add_entity(&mut self, e: Entity) {
        self.by_mb.insert(e.mb.clone(), self.entities.len());
        self.by_pib.insert(e.pib.clone(), self.entities.len());
        self.entities.push(e);
    }

    fn add_sheet(&mut self, s: Sheet) {
        let ko = KOS[s.ko].0.to_string();
        for parcel in &s.parcels {
            self.by_parcel
                .insert((ko.clone(), parcel.number.clone()), self.sheets.len());
        }
        self.by_sheet.insert((ko, s.number), self.sheets.len());
        self.sheets.push(s);
    }

    pub fn citizen(&self, jmbg: &str) -> Option<&Citizen> {
        self.by_jmbg.get(jmbg).map(|&i| &self.citizens[i])
    }

    fn sheets_of(&self, ko: &str, owner: impl Fn(&Owner) -> bool) -> Option<&Sheet> {
        self.sheets
            .iter()
            .find(|s| KOS[s.ko].0 == ko && s.owners.iter().any(|(o, _, _)| owner(o)))
    }
}

fn issuance(p: &str, issuer: &str, number: &str) -> String {
    format!(
        "<{p}:issuance><{p}:issuer>{}</{p}:issuer><{p}:number>{}</{p}:number><{p}:issuedAt>{}</{p}:issuedAt></{p}:issuance>",
        esc(issuer),
        esc(number),
        now_rfc3339()
    )
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn today() -> String {
    now_rfc3339()[..10].to_owned()
}

fn place(p: &str, c: &Citizen) -> String {
    format!(
        "<{p}:place>{}</{p}:place><{p}:municipality>Bečej</{p}:municipality><{p}:country>Republika Srbija</{p}:country>",
        esc(&c.place)
    )
}

fn register(p: &str, c: &Citizen) -> String {
    format!(
        "<{p}:register><{p}:registryOffice>Matično područje {}</{p}:registryOffice><{p}:municipality>80110</{p}:municipality><{p}:year>{}</{p}:year><{p}:volume>{}</{p}:volume><{p}:entry>{}</{p}:entry></{p}:register>",
        esc(&c.place),
        c.birth.0,
        c.entry.0,
        c.entry.1
    )
}

fn date(b: (u32, u32, u32)) -> String {
    format!("{:04}-{:02}-{:02}", b.0, b.1, b.2)
}

fn rsd(para: u64) -> String {
    format!("{}.{:02}", para / 100, para % 100)
}

/// The services the registries answer, by id (which the X-Road front
/// takes as their service codes).
pub const SERVICES: [&str; 6] = [
    "civil.birth-extract",
    "civil.citizenship-certificate",
    "cadastre.property-sheet",
    "cadastre.parcel",
    "tax.clearance-certificate",
    "tax.property-tax-status",
];

/// What a registry answers for a request payload: a document, or not found.
pub enum Answer {
    Document(String),
    NotFound(String),
}

/// Field text of a request payload child, by local name.
pub type Fields = BTreeMap<String, String>;

impl Population {
    /// Builds the document for `service` from the request's fields.
    pub fn answer(&self, service: &str, f: &Fields) -> Answer {
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
        match service {
            "civil.birth-extract" => match self.citizen(get("jmbg")) {
                Some(c) => Answer::Document(self.birth_extract(c)),
                None => Answer::NotFound("no entry in the register of births for this JMBG".into()),
            },
            "civil.citizenship-certificate" => match self.citizen(get("jmbg")) {
                Some(c) => Answer::Document(self.citizenship(c)),
                None => Answer::NotFound("no citizenship record for this JMBG".into()),
            },
            "cadastre.property-sheet" => {
                let ko = get("ko");
                let sheet = if let Some(n) = f.get("sheet") {
                    n.parse::<u32>()
                        .ok()
                        .and_then(|n| self.by_sheet.get(&(ko.to_owned(), n)))
                        .map(|&i| &self.sheets[i])
                } else if let Some(j) = f.get("ownerJmbg") {
                    let idx = self.by_jmbg.get(j).copied();
                    self.sheets_of(ko, |o| matches!(o, Owner::Person(i) if Some(*i) == idx))
                } else if let Some(m) = f.get("ownerMb") {
                    let idx = self.by_mb.get(m).copied();
                    self.sheets_of(ko, |o| matches!(o, Owner::Entity(i) if Some(*i) == idx))
                } else {
                    None
                };
                match sheet {
                    Some(s) => Answer::Document(self.property_sheet(s)),
                    None => Answer::NotFound("no such property sheet in this KO".into()),
                }
            }
            "cadastre.parcel" => match self
                .by_parcel
                .get(&(get("ko").to_owned(), get("parcel").to_owned()))
            {
                Some(&i) => Answer::Document(self.parcel(&self.sheets[i], get("parcel"))),
                None => Answer::NotFound("no such parcel in this KO".into()),
            },
            "tax.clearance-certificate" | "tax.property-tax-status" => {
                let who = if let Some(p) = f.get("pib") {
                    self.by_pib.get(p).map(|&i| Err(&self.entities[i]))
                } else {
                    self.by_jmbg
                        .get(get("jmbg"))
                        .map(|&i| Ok(&self.citizens[i]))
                };
                match (service, who) {
                    (_, None) => Answer::NotFound("no taxpayer with this identifier".into()),
                    ("tax.clearance-certificate", Some(w)) => Answer::Document(self.clearance(w)),
                    (_, Some(w)) => Answer::Document(self.property_tax(w)),
                }
            }
            other => Answer::NotFound(format!("unknown service {other}")),
        }
    }

    fn birth_extract(&self, c: &Citizen) -> String {
        let p = "c";
        format!(
            "<c:BirthExtract xmlns:c=\"urn:jum-gateway:civil:1\">{}{}<c:person><c:firstName>{}</c:firstName><c:lastName>{}</c:lastName><c:jmbg>{}</c:jmbg><c:sex>{}</c:sex><c:birthDate>{}</c:birthDate><c:birthPlace>{}</c:birthPlace><c:citizenship>Republika Srbija</c:citizenship></c:person><c:father><c:firstName>{}</c:firstName><c:lastName>{}</c:lastName></c:father><c:mother><c:firstName>{}</c:firstName><c:lastName>{}</c:lastName></c:mother></c:BirthExtract>",
            issuance(p, "Opštinska uprava Bečej, Odeljenje za opštu upravu", &format!("200-1-{}/{}", c.entry.1, &today()[..4])),
            register(p, c),
            esc(&c.first), esc(&c.last), c.jmbg, if c.female { "F" } else { "M" }, date(c.birth), place(p, c),
            esc(&c.father.0), esc(&c.father.1), esc(&c.mother.0), esc(&c.mother.1)
        )
    }

    fn citizenship(&self, c: &Citizen) -> String {
        let p = "c";
        format!(
            "<c:CitizenshipCertificate xmlns:c=\"urn:jum-gateway:civil:1\">{}<c:person><c:firstName>{}</c:firstName><c:lastName>{}</c:lastName><c:jmbg>{}</c:jmbg><c:birthDate>{}</c:birthDate><c:birthPlace>{}</c:birthPlace></c:person><c:citizenship>Republika Srbija</c:citizenship><c:acquiredBy>origin</c:acquiredBy>{}</c:CitizenshipCertificate>",
            issuance(p, "Opštinska uprava Bečej", &format!("204-2-{}/{}", c.entry.1, &today()[..4])),
            esc(&c.first), esc(&c.last), c.jmbg, date(c.birth), place(p, c), register(p, c)
        )
    }

    fn ko_xml(&self, ko: usize) -> String {
        format!(
            "<k:ko><k:code>{}</k:code><k:name>{}</k:name><k:municipality>80110</k:municipality><k:municipalityName>Bečej</k:municipalityName></k:ko>",
            KOS[ko].0,
            esc(KOS[ko].1)
        )
    }

    fn parcel_xml(parcel: &Parcel) -> String {
        let mut s = format!(
            "<k:parcel><k:number>{}</k:number><k:area>{}</k:area><k:landUse>{}</k:landUse>",
            parcel.number, parcel.area, parcel.land_use
        );
        if let Some(c) = parcel.class {
            let _ = write!(s, "<k:class>{c}</k:class>");
        }
        s.push_str("</k:parcel>");
        s
    }

    fn address(&self, c: &Citizen) -> String {
        format!(
            "<k:address><k:street>{}</k:street><k:number>{}</k:number><k:place>{}</k:place><k:postalCode>21220</k:postalCode></k:address>",
            esc(&c.street),
            c.number,
            esc(&c.place)
        )
    }

    fn property_sheet(&self, s: &Sheet) -> String {
        let mut o = format!(
            "<k:PropertySheet xmlns:k=\"urn:jum-gateway:cadastre:1\">{}{}<k:sheet>{}</k:sheet><k:asOf>{}</k:asOf><k:A>",
            issuance("k", "Republički geodetski zavod, Služba za katastar nepokretnosti Bečej", &format!("952-02-7-{}/{}", s.number, &today()[..4])),
            self.ko_xml(s.ko),
            s.number,
            now_rfc3339()
        );
        for p in &s.parcels {
            o.push_str(&Self::parcel_xml(p));
        }
        o.push_str("</k:A><k:B>");
        let right = if s.owners.len() == 1 {
            "svojina"
        } else {
            "susvojina"
        };
        for (owner, a, b) in &s.owners {
            o.push_str("<k:owner>");
            match owner {
                Owner::Person(i) => {
                    let c = &self.citizens[*i];
                    let _ = write!(o, "<k:person><k:firstName>{}</k:firstName><k:lastName>{}</k:lastName><k:jmbg>{}</k:jmbg>{}</k:person>", esc(&c.first), esc(&c.last), c.jmbg, self.address(c));
                }
                Owner::Entity(i) => {
                    let e = &self.entities[*i];
                    let _ = write!(o, "<k:entity><k:mb>{}</k:mb><k:name>{}</k:name><k:address><k:street>Glavna</k:street><k:number>1</k:number><k:place>Bečej</k:place></k:address></k:entity>", e.mb, esc(&e.name));
                }
            }
            let _ = write!(
                o,
                "<k:right>{right}</k:right><k:share>{a}/{b}</k:share></k:owner>"
            );
        }
        o.push_str("</k:B><k:V>");
        if let Some((area, floors)) = s.building {
            let _ = write!(
                o,
                "<k:building><k:parcel>{}</k:parcel><k:number>1</k:number><k:use>porodična stambena zgrada</k:use><k:floors>{}</k:floors><k:area>{area}</k:area><k:legalStatus>objekat izgrađen sa odobrenjem</k:legalStatus></k:building>",
                s.parcels[0].number,
                if floors > 1 { format!("Pr+{}", floors - 1) } else { "Pr".into() }
            );
        }
        o.push_str("</k:V><k:G>");
        if let Some(m) = s.mortgage {
            let _ = write!(
                o,
                "<k:encumbrance><k:kind>hipoteka</k:kind><k:on>parcela {}</k:on><k:beneficiary>Banka Intesa a.d. Beograd</k:beneficiary><k:amount>{}</k:amount><k:registeredOn>2019-04-11</k:registeredOn><k:basis>Ugovor o hipoteci</k:basis></k:encumbrance>",
                s.parcels[0].number,
                rsd(m)
            );
        }
        o.push_str("</k:G></k:PropertySheet>");
        o
    }

    fn parcel(&self, s: &Sheet, number: &str) -> String {
        let parcel = s
            .parcels
            .iter()
            .find(|p| p.number == number)
            .unwrap_or(&s.parcels[0]);
        format!(
            "<k:Parcel xmlns:k=\"urn:jum-gateway:cadastre:1\">{}{}{}<k:sheet>{}</k:sheet><k:buildings>{}</k:buildings><k:encumbered>{}</k:encumbered></k:Parcel>",
            issuance("k", "Republički geodetski zavod, Služba za katastar nepokretnosti Bečej", &format!("952-02-7-{}/{}", s.number, &today()[..4])),
            self.ko_xml(s.ko),
            Self::parcel_xml(parcel),
            s.number,
            u8::from(s.building.is_some() && parcel.number == s.parcels[0].number),
            s.mortgage.is_some()
        )
    }

    fn taxpayer(w: Result<&Citizen, &Entity>) -> String {
        match w {
            Ok(c) => format!(
                "<t:taxpayer><t:jmbg>{}</t:jmbg><t:name>{} {}</t:name></t:taxpayer>",
                c.jmbg,
                esc(&c.first),
                esc(&c.last)
            ),
            Err(e) => format!(
                "<t:taxpayer><t:pib>{}</t:pib><t:name>{}</t:name></t:taxpayer>",
                e.pib,
                esc(&e.name)
            ),
        }
    }

    fn clearance(&self, w: Result<&Citizen, &Entity>) -> String {
        let debt = match w {
            Ok(c) => (c.entry.1 as u64).is_multiple_of(3) as u64 * (c.entry.1 as u64 * 1234),
            Err(e) => e.debt_para,
        };
        let mut o = format!(
            "<t:ClearanceCertificate xmlns:t=\"urn:jum-gateway:tax:1\">{}{}<t:asOf>{}</t:asOf><t:settled>{}</t:settled><t:debt>{}</t:debt>",
            issuance("t", "Poreska uprava, Filijala Bečej", &format!("430-08-{}/{}", debt % 10_000, &today()[..4])),
            Self::taxpayer(w),
            today(),
            debt == 0,
            rsd(debt)
        );
        if debt > 0 {
            let _ = write!(o, "<t:item><t:taxType>porez na dohodak građana</t:taxType><t:amount>{}</t:amount><t:dueSince>2026-04-30</t:dueSince></t:item>", rsd(debt));
        }
        o.push_str("</t:ClearanceCertificate>");
        o
    }

    fn property_tax(&self, w: Result<&Citizen, &Entity>) -> String {
        let owner_idx = match w {
            Ok(c) => self.by_jmbg.get(&c.jmbg).map(|&i| Owner::Person(i)),
            Err(e) => self.by_mb.get(&e.mb).map(|&i| Owner::Entity(i)),
        };
        let sheets: Vec<&Sheet> = self
            .sheets
            .iter()
            .filter(|s| s.owners.iter().any(|(o, _, _)| matches!((o, &owner_idx), (Owner::Person(a), Some(Owner::Person(b))) | (Owner::Entity(a), Some(Owner::Entity(b))) if a == b)))
            .collect();
        let mut o = format!(
            "<t:PropertyTaxStatus xmlns:t=\"urn:jum-gateway:tax:1\">{}{}<t:municipality>80110</t:municipality><t:year>{}</t:year>",
            issuance("t", "Opštinska uprava Bečej, Odeljenje za lokalnu poresku administraciju", "436-1-990/2026"),
            Self::taxpayer(w),
            &today()[..4]
        );
        let mut total = 0u64;
        if sheets.is_empty() {
            o.push_str("<t:assessment><t:property>nema nepokretnosti</t:property><t:ko>803472</t:ko><t:parcel>1</t:parcel><t:taxBase>0.00</t:taxBase><t:tax>0.00</t:tax></t:assessment>");
        }
        for s in sheets {
            let base = s
                .parcels
                .iter()
                .map(|p| p.area as u64 * 10_000)
                .sum::<u64>();
            let tax = base / 800;
            total += tax;
            let _ = write!(
                o,
                "<t:assessment><t:property>{}</t:property><t:ko>{}</t:ko><t:parcel>{}</t:parcel><t:taxBase>{}</t:taxBase><t:tax>{}</t:tax></t:assessment>",
                if s.building.is_some() { "porodična stambena zgrada" } else { "zemljište" },
                KOS[s.ko].0,
                s.parcels[0].number,
                rsd(base),
                rsd(tax)
            );
        }
        let paid = total * 3 / 4;
        let _ = write!(
            o,
            "<t:paid>{}</t:paid><t:balance>{}</t:balance></t:PropertyTaxStatus>",
            rsd(paid),
            rsd(total - paid)
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Jmbg, Mb, Pib};

    #[test]
    fn deterministic_valid_and_contains_the_examples() {
        let a = Population::generate(7, 200);
        let b = Population::generate(7, 200);
        assert_eq!(
            a.citizens.iter().map(|c| &c.jmbg).collect::<Vec<_>>(),
            b.citizens.iter().map(|c| &c.jmbg).collect::<Vec<_>>()
        );
        for c in &a.citizens {
            Jmbg::parse(&c.jmbg).unwrap();
        }
        for e in &a.entities {
            Mb::parse(&e.mb).unwrap();
            Pib::parse(&e.pib).unwrap();
        }
        for s in &a.sheets {
            let sum: f64 = s.owners.iter().map(|(_, x, y)| *x as f64 / *y as f64).sum();
            assert!(
                (sum - 1.0).abs() < 1e-9,
                "shares of sheet {} sum to {sum}",
                s.number
            );
        }
        assert!(a.citizen(EXAMPLE_JMBG).is_some());
        let f = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Fields>()
        };
        assert!(matches!(
            a.answer(
                "cadastre.parcel",
                &f(&[("ko", EXAMPLE_KO), ("parcel", EXAMPLE_PARCEL)])
            ),
            Answer::Document(_)
        ));
        assert!(matches!(
            a.answer(
                "cadastre.property-sheet",
                &f(&[("ko", EXAMPLE_KO), ("sheet", "1520")])
            ),
            Answer::Document(_)
        ));
        assert!(matches!(
            a.answer("tax.clearance-certificate", &f(&[("pib", EXAMPLE_PIB)])),
            Answer::Document(_)
        ));
        assert!(matches!(
            a.answer("civil.birth-extract", &f(&[("jmbg", "0101990800007")])),
            Answer::NotFound(_)
        ));
    }
}
