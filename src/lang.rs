//! The three languages people are addressed in — the dashboard's pages and
//! the operators' mails: English, Serbian (Latin script), Hungarian (the
//! official languages of a Vojvodina municipality such as Bečej).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Sr,
    Hu,
}

impl Lang {
    /// As HTML's `lang` says it.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Sr => "sr-Latn",
            Lang::Hu => "hu",
        }
    }

    /// This language's word of an English, Serbian, Hungarian triple.
    pub fn pick(self, [en, sr, hu]: [&'static str; 3]) -> &'static str {
        match self {
            Lang::En => en,
            Lang::Sr => sr,
            Lang::Hu => hu,
        }
    }

    pub fn from_code(c: &str) -> Option<Lang> {
        match c {
            "en" => Some(Lang::En),
            "sr" | "sr-Latn" => Some(Lang::Sr),
            "hu" => Some(Lang::Hu),
            _ => None,
        }
    }
}
