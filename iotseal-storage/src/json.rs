//! How stored readings appear in JSON (the gateway's admin API): serde and OpenAPI helpers for
//! [`StoredReading`](crate::StoredReading)'s fields.

use serde::Serialize;
use utoipa::openapi::schema::{
    ArrayBuilder, ArrayItems, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};

/// The spellings of the values JSON has no number for: NaN, +infinity, −infinity.
pub const NON_FINITE: [&str; 3] = ["NaN", "Infinity", "-Infinity"];

/// The name of a value JSON has no number for (NaN, ±infinity); `None` for a finite value.
pub fn non_finite(v: impl Into<f64>) -> Option<&'static str> {
    match v.into() {
        v if v.is_finite() => None,
        v if v.is_nan() => Some(NON_FINITE[0]),
        v if v > 0.0 => Some(NON_FINITE[1]),
        _ => Some(NON_FINITE[2]),
    }
}

/// A reading's `msg_id` in the admin JSON: a decimal string (ids reach 2^62 − 1; a JSON
/// number above 2^53 is rounded by JavaScript).
pub fn msg_id_json<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// A reading's `values` in the admin JSON: `[name, value]` pairs, a non-finite value as one
/// of [`NON_FINITE`] (serde_json would write `null` for all three). A value is written as the
/// f32 it is, in the f32's shortest decimal form (21.3, not 21.299999237060547): the decimal
/// text exists only here, at output.
pub fn values_json<S: serde::Serializer>(
    values: &[(String, f32)],
    s: S,
) -> Result<S::Ok, S::Error> {
    /// One value: a number, or its name when JSON has no number for it.
    struct Value(f32);
    impl Serialize for Value {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match non_finite(self.0) {
                Some(name) => s.serialize_str(name),
                None => s.serialize_f32(self.0),
            }
        }
    }
    s.collect_seq(values.iter().map(|(name, v)| (name, Value(*v))))
}

/// The schema of a stored reading's `values`: `[name, value]` pairs.
pub fn values_schema() -> Schema {
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "The sensor: `temperature` (°C), `humidity` (% relative), `pressure` (hPa), \
             `latitude` (°), `longitude` (°), `accel_x`, `accel_y`, `accel_z` (m/s²), \
             `heart_rate` (bpm), `power` (W), `energy` (Wh), `battery` (% charge), or \
             `other_<code>` for a kind this gateway does not know (its decimal code; \
             docs/protocol.md §8.12).",
        ))
        .examples(["temperature", "other_200"])
        .build();
    let number = ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .description(Some("A finite value."))
        .build();
    let non_finite = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(NON_FINITE))
        .description(Some(
            "A value JSON has no number for: NaN, +infinity, −infinity (the spellings of \
             JavaScript's `Number()` and Python's `float()`).",
        ))
        .build();
    let value = OneOfBuilder::new()
        .item(Schema::from(number))
        .item(Schema::from(non_finite))
        .description(Some(
            "The value the device sent (an IEEE 754 binary32): a JSON number in its shortest \
             decimal form (21.3, not 21.299999237060547), or for NaN and ±infinity the string \
             `\"NaN\"`, `\"Infinity\"` or `\"-Infinity\"`. Never `null`.",
        ))
        .build();
    let pair = ArrayBuilder::new()
        .items(ArrayItems::False)
        .prefix_items([Schema::from(name), Schema::from(value)])
        .min_items(Some(2))
        .description(Some("One value: `[name, value]`."))
        .build();
    ArrayBuilder::new()
        .items(RefOr::T(Schema::from(pair)))
        .max_items(Some(32))
        .description(Some(
            "The values of the reading, in the order of its payload (a sensor may appear more \
             than once): at most 32.",
        ))
        .examples([
            serde_json::json!([["temperature", 21.5], ["humidity", 40.0]]),
            serde_json::json!([["temperature", "NaN"], ["power", "-Infinity"]]),
        ])
        .build()
        .into()
}
