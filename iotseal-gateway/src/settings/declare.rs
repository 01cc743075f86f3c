//! The one declaration of every setting: [`section!`] turns a table of fields (doc, name, type,
//! default, optional flag and example) into the section's struct, its `Default`, and the
//! metadata ([`Field`]) that the layering, the command-line flags, the commented template and
//! `docs/settings.md` are generated from.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One setting, as declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Its section (`limits`, `mqtt`, ...); empty at the top level.
    pub section: &'static str,
    /// Its name within the section.
    pub name: &'static str,
    /// Its Rust type, as written in the declaration.
    pub ty: &'static str,
    /// Its documentation, one entry per line (each with its leading space).
    pub doc: &'static [&'static str],
    /// Prefix of the flag of each setting of the section (`tls-`, `mqtt-`, or none).
    pub(crate) flag_prefix: &'static str,
    /// The flag's name when it is not the prefix and the name (`cluster` for `cluster.url`).
    pub(crate) flag_name: &'static [&'static str],
    /// A value shown (commented out) in the template for a setting without a default.
    pub(crate) example: &'static [&'static str],
}

impl Field {
    /// The dotted name: `listen`, `limits.max_body`.
    pub fn key(&self) -> String {
        if self.section.is_empty() {
            self.name.to_string()
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }

    /// The command-line flag, without its `--`: `max-body`, `tls-cert`, `mqtt-broker`.
    pub fn flag(&self) -> String {
        match self.flag_name.first() {
            Some(f) => (*f).to_string(),
            None => format!("{}{}", self.flag_prefix, self.name).replace('_', "-"),
        }
    }

    /// The environment variable: `IOTSEAL_` and the flag in capitals (`IOTSEAL_MAX_BODY`).
    pub fn env(&self) -> String {
        format!(
            "IOTSEAL_{}",
            self.flag().replace('-', "_").to_ascii_uppercase()
        )
    }

    /// The documentation as one paragraph of text lines (leading spaces removed).
    pub fn doc_lines(&self) -> impl Iterator<Item = &'static str> {
        self.doc.iter().map(|l| l.strip_prefix(' ').unwrap_or(l))
    }

    pub(crate) fn example(&self) -> Option<&'static str> {
        self.example.first().copied()
    }
}

/// A section as declared: its name (empty at the top level) and its documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionDoc {
    /// `tls`, `limits`, ...; empty for the top level.
    pub name: &'static str,
    /// Documentation lines (each with its leading space).
    pub doc: &'static [&'static str],
}

/// A value for one setting: from a file (already TOML) or from text (environment, flag).
pub(crate) enum Input<'a> {
    Toml(toml::Value),
    Text(&'a str),
}

/// Sets `slot` from `input`, through the field's own `Deserialize`. Text is read as a TOML
/// value (`42`, `true`, `["a", "b"]`), or else as a plain string; text for a string field
/// stays a string even if it parses as a number, and a list may be given as `a,b,c`.
pub(crate) fn assign<T: Serialize + DeserializeOwned>(
    slot: &mut T,
    input: Input<'_>,
) -> Result<(), String> {
    let value = match input {
        Input::Toml(v) => v,
        Input::Text(text) => {
            let parsed = toml::from_str::<toml::Table>(&format!("v = {text}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(text.to_string()));
            match (toml::Value::try_from(&*slot).ok(), parsed) {
                (Some(toml::Value::String(_)), v) if !v.is_str() => {
                    toml::Value::String(text.to_string())
                }
                (Some(toml::Value::Array(_)), v) if !v.is_array() => toml::Value::Array(
                    text.split(',')
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(|x| toml::Value::String(x.to_string()))
                        .collect(),
                ),
                (_, v) => v,
            }
        }
    };
    *slot = value
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
    Ok(())
}

/// Declares one section of the settings: its struct (with `serde(default,
/// deny_unknown_fields)`), its `Default` from the declared defaults, and its metadata.
///
/// ```text
/// section! {
///     /// Section documentation (the struct's, and the template's and reference's).
///     pub struct Limits [derive(Eq)] in "limits", flags "" {
///         /// Setting documentation.
///         max_body: usize = 1 << 20;
///         url: String = String::new(), flag "cluster";       // a flag not derived from the name
///         client_ca: Option<PathBuf> = None, example "ca.pem"; // shown commented out
///     }
///     sections { /// doc
///                tls: TlsSettings, }            // nested sections (the top level only)
///     internal { /// doc
///                base_dir: PathBuf = ..., }     // not settings: no key, `serde(skip)`
/// }
/// ```
macro_rules! section {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident $([derive($($extra:ident),*)])? in $section:literal, flags $prefix:literal {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr $(, flag $flag:literal)? $(, example $ex:literal)? ;
            )*
        }
        $(sections {
            $( $(#[doc = $ndoc:literal])* $nfield:ident : $nty:ident, )*
        })?
        $(internal {
            $( $(#[doc = $idoc:literal])* $ifield:ident : $ity:ty = $idefault:expr, )*
        })?
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize $($(, $extra)*)?)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $($( $(#[doc = $ndoc])* pub $nfield: $nty, )*)?
            $($( $(#[doc = $idoc])* #[serde(skip)] pub $ifield: $ity, )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $( $field: $default, )*
                    $($( $nfield: $nty::default(), )*)?
                    $($( $ifield: $idefault, )*)?
                }
            }
        }

        impl $name {
            /// Appends this section's fields, then those of its nested sections.
            fn collect_fields(out: &mut Vec<$crate::settings::declare::Field>) {
                $(
                    out.push($crate::settings::declare::Field {
                        section: $section,
                        name: stringify!($field),
                        ty: stringify!($ty),
                        doc: &[$($doc),*],
                        flag_prefix: $prefix,
                        flag_name: &[$($flag)?],
                        example: &[$($ex)?],
                    });
                )*
                $($( $nty::collect_fields(out); )*)?
            }

            /// Appends this section, then its nested sections.
            fn collect_sections(out: &mut Vec<$crate::settings::declare::SectionDoc>) {
                out.push($crate::settings::declare::SectionDoc {
                    name: $section,
                    doc: &[$($sdoc),*],
                });
                $($( $nty::collect_sections(out); )*)?
            }

            /// Sets the field `name` of `section` (empty: this one); `None` if there is none.
            #[allow(unused_variables)]
            fn set_field(
                &mut self,
                section: &str,
                name: &str,
                input: $crate::settings::declare::Input<'_>,
            ) -> Option<Result<(), String>> {
                if section == $section {
                    return match name {
                        $( stringify!($field) => {
                            Some($crate::settings::declare::assign(&mut self.$field, input))
                        } )*
                        _ => None,
                    };
                }
                $($( if section == stringify!($nfield) {
                    return self.$nfield.set_field(section, name, input);
                } )*)?
                None
            }

            /// The value of the field `name` of `section` as TOML (`None`: unset or unknown).
            #[allow(unused_variables)]
            fn field_value(&self, section: &str, name: &str) -> Option<toml::Value> {
                if section == $section {
                    return match name {
                        $( stringify!($field) => toml::Value::try_from(&self.$field).ok(), )*
                        _ => None,
                    };
                }
                $($( if section == stringify!($nfield) {
                    return self.$nfield.field_value(section, name);
                } )*)?
                None
            }
        }
    };
}
