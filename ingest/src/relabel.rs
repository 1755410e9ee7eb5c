//! Relabeling: `relabel_configs`, `metric_relabel_configs` and every other
//! `*_relabel_configs` list, with Prometheus's semantics.
//!
//! A [`RelabelConfig`] is validated when it is read (the same rules as
//! Prometheus: which fields each action needs or forbids), so [`relabel`]
//! itself cannot fail: it applies the steps in order to a label set and
//! says whether the set survives.
//!
//! Semantics kept from Prometheus:
//! * the value the regex sees is the source labels' values (missing = "")
//!   joined with `separator` (default `;`);
//! * regexes are fully anchored, `^(?s:re)$`, with Go RE2 meanings of
//!   `\d \w \s \b` (see [`kiln_storage::matcher::translate_go_regex`]);
//! * `replacement` (default `$1`) and `target_label` expand `$1`, `${1}`,
//!   `$name`, `${name}`; `$1x` names the group `1x` (absent, so empty), as
//!   in Go; an empty result deletes the target label;
//! * `hashmod` is the last 8 bytes of the MD5 of the value, big-endian,
//!   modulo `modulus`.

use std::fmt;

use kiln_storage::LabelsBuilder;
use kiln_storage::matcher::translate_go_regex;
use regex::Regex;
use serde::Deserialize;

use crate::config::units::{StrVisitor, de_null_default};

/// A relabeling action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Action {
    /// Set `target_label` to `replacement` expanded with the regex match.
    #[default]
    Replace,
    /// Keep the set only when the regex matches the joined value.
    Keep,
    /// Drop the set when the regex matches the joined value.
    Drop,
    /// Keep the set only when the joined value equals `target_label`'s value.
    KeepEqual,
    /// Drop the set when the joined value equals `target_label`'s value.
    DropEqual,
    /// Set `target_label` to the MD5 of the joined value modulo `modulus`.
    HashMod,
    /// Copy every label whose name matches to the expanded `replacement`.
    LabelMap,
    /// Remove every label whose name matches.
    LabelDrop,
    /// Remove every label whose name does not match.
    LabelKeep,
    /// Set `target_label` to the lower-cased joined value.
    Lowercase,
    /// Set `target_label` to the upper-cased joined value.
    Uppercase,
}

impl Action {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl<'de> Deserialize<'de> for Action {
    /// Case-insensitive, as Prometheus reads it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor {
            parse: Action::parse,
            expecting: "a relabel action",
        })
    }
}

impl Action {
    fn parse(s: &str) -> Result<Action, String> {
        let a = match s.to_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            "" => return Err("relabel action cannot be empty".into()),
            _ => return Err(format!("unknown relabel action {s:?}")),
        };
        Ok(a)
    }
}

/// A relabel regex: the pattern as written and its anchored compilation.
#[derive(Clone)]
pub struct RelabelRegex {
    source: String,
    re: Regex,
}

/// The default regex, `(.*)`.
pub const DEFAULT_REGEX: &str = "(.*)";

impl RelabelRegex {
    /// Compiles `pattern` as Prometheus does: `^(?s:pattern)$`, Go RE2
    /// semantics.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let re = Regex::new(&format!("^(?s:{})$", translate_go_regex(pattern)))?;
        Ok(RelabelRegex {
            source: pattern.to_owned(),
            re,
        })
    }

    /// The pattern as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    /// Expands `template` with the groups of the match of `s`, or `None`
    /// when `s` does not match.
    fn expand(&self, s: &str, template: &str) -> Option<String> {
        let caps = self.re.captures(s)?;
        let mut out = String::new();
        caps.expand(template, &mut out);
        Some(out)
    }
}

impl Default for RelabelRegex {
    fn default() -> Self {
        // The default pattern is a constant known to compile.
        RelabelRegex::new(DEFAULT_REGEX).expect("(.*) compiles")
    }
}

impl PartialEq for RelabelRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for RelabelRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl<'de> Deserialize<'de> for RelabelRegex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor {
            parse: |s| RelabelRegex::new(s).map_err(|e| format!("invalid regex {s:?}: {e}")),
            expecting: "a regular expression",
        })
    }
}

/// One relabeling step. Built only through deserialization or
/// [`RelabelConfig::new`], both of which validate it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawRelabelConfig")]
pub struct RelabelConfig {
    /// Labels whose values are joined to form the input.
    pub source_labels: Vec<String>,
    /// Separator of the joined values (default `;`).
    pub separator: String,
    /// Regex the joined value (or label name) is matched against.
    pub regex: RelabelRegex,
    /// Modulus of `hashmod`.
    pub modulus: u64,
    /// Label written by `replace`, `hashmod`, `lowercase`, `uppercase`, or
    /// compared by `keepequal`/`dropequal`.
    pub target_label: String,
    /// Replacement template (default `$1`).
    pub replacement: String,
    /// The action (default `replace`).
    pub action: Action,
}

/// The fields as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabelConfig {
    #[serde(default, deserialize_with = "de_null_default")]
    source_labels: Vec<String>,
    separator: Option<String>,
    regex: Option<RelabelRegex>,
    #[serde(default)]
    modulus: u64,
    #[serde(default)]
    target_label: String,
    replacement: Option<String>,
    #[serde(default)]
    action: Action,
}

impl TryFrom<RawRelabelConfig> for RelabelConfig {
    type Error = String;

    fn try_from(r: RawRelabelConfig) -> Result<Self, String> {
        RelabelConfig::new(
            r.action,
            r.source_labels,
            r.separator,
            r.regex,
            r.modulus,
            r.target_label,
            r.replacement,
        )
    }
}

impl RelabelConfig {
    /// A validated step; `None` fields take Prometheus's defaults. The
    /// error says which rule the combination breaks.
    pub fn new(
        action: Action,
        source_labels: Vec<String>,
        separator: Option<String>,
        regex: Option<RelabelRegex>,
        modulus: u64,
        target_label: String,
        replacement: Option<String>,
    ) -> Result<Self, String> {
        let name = action.as_str();
        let non_default_extra = separator.as_deref().is_some_and(|s| s != ";")
            || replacement.as_deref().is_some_and(|r| r != "$1")
            || modulus != 0;
        match action {
            Action::HashMod if modulus == 0 => {
                return Err("relabel configuration for hashmod requires non-zero modulus".into());
            }
            Action::Replace
            | Action::HashMod
            | Action::Lowercase
            | Action::Uppercase
            | Action::KeepEqual
            | Action::DropEqual
                if target_label.is_empty() =>
            {
                return Err(format!(
                    "relabel configuration for {name} action requires 'target_label' value"
                ));
            }
            Action::LabelDrop | Action::LabelKeep
                if !source_labels.is_empty() || !target_label.is_empty() || non_default_extra =>
            {
                return Err(format!(
                    "{name} action requires only 'regex', and no other fields"
                ));
            }
            Action::KeepEqual | Action::DropEqual
                if regex.as_ref().is_some_and(|r| r.as_str() != DEFAULT_REGEX)
                    || non_default_extra =>
            {
                return Err(format!(
                    "{name} action requires only 'source_labels' and 'target_label', and no other fields"
                ));
            }
            _ => {}
        }
        Ok(RelabelConfig {
            source_labels,
            separator: separator.unwrap_or_else(|| ";".into()),
            regex: regex.unwrap_or_default(),
            modulus,
            target_label,
            replacement: replacement.unwrap_or_else(|| "$1".into()),
            action,
        })
    }
}

/// Applies `cfgs` in order to `lb`. Returns false when a step drops the
/// label set (the caller then discards it); `lb` is then left as it was at
/// that step.
pub fn relabel(lb: &mut LabelsBuilder, cfgs: &[RelabelConfig]) -> bool {
    cfgs.iter().all(|c| step(lb, c))
}

fn step(lb: &mut LabelsBuilder, c: &RelabelConfig) -> bool {
    let mut val = String::new();
    for (i, name) in c.source_labels.iter().enumerate() {
        if i > 0 {
            val.push_str(&c.separator);
        }
        val.push_str(lb.get(name).unwrap_or(""));
    }
    match c.action {
        Action::Drop => return !c.regex.is_match(&val),
        Action::Keep => return c.regex.is_match(&val),
        Action::DropEqual => return lb.get(&c.target_label).unwrap_or("") != val,
        Action::KeepEqual => return lb.get(&c.target_label).unwrap_or("") == val,
        Action::Replace => {
            let Some(target) = c.regex.expand(&val, &c.target_label) else {
                return true;
            };
            if target.is_empty() {
                return true;
            }
            // The regex matched once above; expanding again cannot miss.
            let value = c.regex.expand(&val, &c.replacement).unwrap_or_default();
            lb.set(&target, &value);
        }
        Action::Lowercase => {
            lb.set(&c.target_label, &val.to_lowercase());
        }
        Action::Uppercase => {
            lb.set(&c.target_label, &val.to_uppercase());
        }
        Action::HashMod => {
            let sum = md5::compute(val.as_bytes()).0;
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&sum[8..]);
            let m = u64::from_be_bytes(tail) % c.modulus;
            lb.set(&c.target_label, &m.to_string());
        }
        Action::LabelMap => {
            let pairs: Vec<(String, String)> = lb
                .pairs()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            for (name, value) in pairs {
                if let Some(new) = c.regex.expand(&name, &c.replacement)
                    && !new.is_empty()
                {
                    lb.set(&new, &value);
                }
            }
        }
        Action::LabelDrop => {
            lb.retain(|n, _| !c.regex.is_match(n));
        }
        Action::LabelKeep => {
            lb.retain(|n, _| c.regex.is_match(n));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use kiln_storage::Labels;

    use super::*;

    fn cfgs(yaml: &str) -> Vec<RelabelConfig> {
        serde_norway::from_str(yaml).unwrap()
    }

    fn run(labels: &[(&str, &str)], yaml: &str) -> Option<Labels> {
        let mut lb = Labels::from_pairs(labels.iter().copied())
            .unwrap()
            .builder();
        relabel(&mut lb, &cfgs(yaml)).then(|| lb.build().unwrap())
    }

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn defaults() {
        let c = &cfgs("- target_label: x")[0];
        assert_eq!(c.action, Action::Replace);
        assert_eq!(c.separator, ";");
        assert_eq!(c.regex.as_str(), "(.*)");
        assert_eq!(c.replacement, "$1");
    }

    #[test]
    fn replace_joins_sources_and_expands_groups() {
        let out = run(
            &[("a", "foo"), ("b", "bar")],
            r"
- source_labels: [a, b, missing]
  regex: '(f.o);(.*);'
  target_label: c
  replacement: '${2}-$1'
",
        );
        assert_eq!(
            out,
            Some(ls(&[("a", "foo"), ("b", "bar"), ("c", "bar-foo")]))
        );
    }

    #[test]
    fn replace_without_match_changes_nothing_and_empty_result_deletes() {
        let l = [("a", "foo")];
        let no_match = "- {source_labels: [a], regex: 'x', target_label: b}";
        assert_eq!(run(&l, no_match), Some(ls(&l)));
        let empty = "- {source_labels: [b], regex: '(.*)', target_label: a}";
        assert_eq!(run(&l, empty), Some(ls(&[])));
    }

    #[test]
    fn regex_is_anchored_and_go_flavoured() {
        let l = [("a", "foo")];
        assert_eq!(
            run(&l, "- {source_labels: [a], regex: 'o+', action: keep}"),
            None
        );
        assert!(run(&l, "- {source_labels: [a], regex: 'fo+', action: keep}").is_some());
        // Go's \d is ASCII only: an Arabic-Indic digit does not match.
        let l = [("a", "\u{0663}")];
        assert_eq!(
            run(&l, r"- {source_labels: [a], regex: '\d', action: keep}"),
            None
        );
    }

    #[test]
    fn named_groups_and_target_templates() {
        let out = run(
            &[("a", "k=v")],
            r"
- source_labels: [a]
  regex: '(?P<key>[^=]+)=(?P<val>.*)'
  target_label: 'lbl_${key}'
  replacement: '$val'
",
        );
        assert_eq!(out.unwrap().get("lbl_k"), Some("v"));
        // `$1x` is the group named `1x`, which does not exist: empty.
        let out = run(
            &[("a", "v")],
            "- {source_labels: [a], target_label: b, replacement: '$1x'}",
        );
        assert_eq!(out, Some(ls(&[("a", "v")])));
    }

    #[test]
    fn keep_drop_equal() {
        let l = [("a", "1"), ("b", "1"), ("c", "2")];
        assert!(
            run(
                &l,
                "- {source_labels: [a], target_label: b, action: keepequal}"
            )
            .is_some()
        );
        assert!(
            run(
                &l,
                "- {source_labels: [a], target_label: c, action: keepequal}"
            )
            .is_none()
        );
        assert!(
            run(
                &l,
                "- {source_labels: [a], target_label: b, action: dropequal}"
            )
            .is_none()
        );
        assert!(
            run(
                &l,
                "- {source_labels: [a], target_label: c, action: dropequal}"
            )
            .is_some()
        );
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // md5("foo") = acbd18db4cc2f85cedef654fccc4a4d8; the last 8 bytes,
        // big-endian, are 0xedef654fccc4a4d8.
        let want = (0xedef_654f_ccc4_a4d8_u64 % 1000).to_string();
        let out = run(
            &[("a", "foo")],
            "- {source_labels: [a], target_label: h, modulus: 1000, action: hashmod}",
        );
        assert_eq!(out.unwrap().get("h"), Some(want.as_str()));
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        let l = [("__meta_x_foo", "1"), ("__meta_x_bar", "2"), ("job", "j")];
        let out = run(&l, "- {action: labelmap, regex: '__meta_x_(.+)'}").unwrap();
        assert_eq!(out.get("foo"), Some("1"));
        assert_eq!(out.get("bar"), Some("2"));
        assert_eq!(out.get("__meta_x_foo"), Some("1"));
        let out = run(&l, "- {action: labeldrop, regex: '__meta_.*'}").unwrap();
        assert_eq!(out, ls(&[("job", "j")]));
        let out = run(&l, "- {action: labelkeep, regex: '__meta_.*'}").unwrap();
        assert_eq!(out, ls(&[("__meta_x_foo", "1"), ("__meta_x_bar", "2")]));
    }

    #[test]
    fn lower_and_upper_case() {
        let l = [("a", "MiXed")];
        let out = run(
            &l,
            "- {source_labels: [a], target_label: lo, action: lowercase}\n- {source_labels: [a], target_label: up, action: UpperCase}",
        )
        .unwrap();
        assert_eq!(out.get("lo"), Some("mixed"));
        assert_eq!(out.get("up"), Some("MIXED"));
    }

    #[test]
    fn drop_stops_the_pipeline() {
        let l = [("a", "x")];
        let yaml =
            "- {source_labels: [a], regex: x, action: drop}\n- {target_label: b, replacement: y}";
        assert_eq!(run(&l, yaml), None);
    }

    #[test]
    fn invalid_combinations_are_refused() {
        for (yaml, msg) in [
            ("- {action: hashmod, target_label: a}", "non-zero modulus"),
            ("- {action: replace}", "requires 'target_label'"),
            (
                "- {action: lowercase, source_labels: [a]}",
                "requires 'target_label'",
            ),
            (
                "- {action: labeldrop, regex: a, source_labels: [b]}",
                "only 'regex'",
            ),
            (
                "- {action: keepequal, target_label: a, regex: x}",
                "only 'source_labels'",
            ),
            ("- {action: explode}", "unknown relabel action"),
            ("- {regex: '(', target_label: a}", "invalid regex"),
            ("- {target_label: a, colour: red}", "unknown field"),
        ] {
            let err = serde_norway::from_str::<Vec<RelabelConfig>>(yaml)
                .unwrap_err()
                .to_string();
            assert!(err.contains(msg), "{yaml}: {err}");
        }
    }
}
