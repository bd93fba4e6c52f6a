//! English and Russian texts, chosen per request by `Accept-Language`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    En,
    Ru,
}

impl Locale {
    /// Picks the best supported language from an `Accept-Language` value,
    /// honouring q-values ("ru-RU,ru;q=0.9,en;q=0.8" gives Russian).
    pub fn from_accept_language(header: Option<&str>) -> Self {
        let Some(header) = header else {
            return Locale::En;
        };
        let mut best: Option<(f32, Locale)> = None;
        for part in header.split(',') {
            let mut pieces = part.trim().split(';');
            let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = pieces
                .find_map(|p| p.trim().strip_prefix("q=").map(str::to_owned))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let locale = match primary {
                "ru" => Locale::Ru,
                "en" => Locale::En,
                _ => continue,
            };
            if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
                best = Some((quality, locale));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }
}

/// A text the daemon shows to a person, in every language it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub en: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ru: Option<String>,
}

impl Text {
    pub fn new(en: impl Into<String>, ru: impl Into<String>) -> Self {
        Text {
            en: en.into(),
            ru: Some(ru.into()),
        }
    }

    /// A text that has no translation (a journal line, a command's output).
    pub fn untranslated(text: impl Into<String>) -> Self {
        Text {
            en: text.into(),
            ru: None,
        }
    }

    pub fn get(&self, locale: Locale) -> &str {
        match locale {
            Locale::Ru => self.ru.as_deref().unwrap_or(&self.en),
            Locale::En => &self.en,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_highest_quality_supported_language() {
        assert_eq!(Locale::from_accept_language(None), Locale::En);
        assert_eq!(Locale::from_accept_language(Some("ru")), Locale::Ru);
        assert_eq!(
            Locale::from_accept_language(Some("de-DE,ru;q=0.5,en;q=0.4")),
            Locale::Ru
        );
        assert_eq!(
            Locale::from_accept_language(Some("ru;q=0.2, en-GB")),
            Locale::En
        );
        assert_eq!(Locale::from_accept_language(Some("fr")), Locale::En);
    }

    #[test]
    fn untranslated_text_falls_back_to_english() {
        let text = Text::untranslated("building");
        assert_eq!(text.get(Locale::Ru), "building");
        assert_eq!(Text::new("yes", "да").get(Locale::Ru), "да");
    }
}
