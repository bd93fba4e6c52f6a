//! The app's two custom scalars, with the Python API's wire formats.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{NaiveDateTime, Utc};

// Sent as ISO 8601 with microseconds and an explicit UTC offset
/// (`2026-11-22T10:00:00.123456+00:00`), which the app's `DateTime.parse`
// reads unambiguously. Accepted with an offset or, as the Python API
// accepted it, naive (then taken as UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<Utc>);

/// Date with time (isoformat)
#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(text) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        if let Ok(with_offset) = chrono::DateTime::parse_from_rfc3339(text) {
            return Ok(DateTime(with_offset.with_timezone(&Utc)));
        }
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|naive| DateTime(naive.and_utc()))
            .map_err(|_| {
                InputValueError::custom(format!(
                    "\"{text}\" is not an ISO 8601 date and time such as 2026-12-31T23:59:00+00:00"
                ))
            })
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
    }
}

impl From<chrono::DateTime<Utc>> for DateTime {
    fn from(value: chrono::DateTime<Utc>) -> Self {
        DateTime(value)
    }
}

// Any JSON value (service configuration maps).
#[derive(Debug, Clone, PartialEq)]
pub struct Json(pub serde_json::Value);

/// The `JSON` scalar type represents JSON values as specified by [ECMA-404](https://ecma-international.org/wp-content/uploads/ECMA-404_2nd_edition_december_2017.pdf).
#[Scalar(
    name = "JSON",
    specified_by_url = "https://ecma-international.org/wp-content/uploads/ECMA-404_2nd_edition_december_2017.pdf"
)]
impl ScalarType for Json {
    fn parse(value: Value) -> InputValueResult<Self> {
        value
            .into_json()
            .map(Json)
            .map_err(|e| InputValueError::custom(format!("not a JSON value: {e}")))
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_round_trips_and_accepts_naive_input() {
        let parsed = DateTime::parse(Value::String("2026-01-02T03:04:05.5".into())).unwrap();
        assert_eq!(
            parsed.to_value(),
            Value::String("2026-01-02T03:04:05.500000+00:00".into())
        );
        let offset = DateTime::parse(Value::String("2026-01-02T06:04:05+03:00".into())).unwrap();
        assert_eq!(
            offset.0,
            chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap()
        );
        assert!(DateTime::parse(Value::String("tomorrow".into())).is_err());
    }
}
