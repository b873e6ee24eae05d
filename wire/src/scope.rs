//! Peer scopes: glob patterns matched against a CloudEvent `type`.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Most patterns one scope list may hold.
pub const MAX_SCOPES: usize = 64;
/// Longest pattern accepted.
pub const MAX_SCOPE_LEN: usize = 256;

/// Why a scope list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A pattern is not a valid glob.
    #[error("invalid scope pattern {pattern:?}: {reason}")]
    Invalid {
        /// The offending pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Too many patterns.
    #[error("at most {MAX_SCOPES} scopes are allowed")]
    TooMany,
    /// Empty list.
    #[error("scopes must not be empty")]
    Empty,
}

/// A compiled scope list: matches a type if any pattern matches it, either whole or
/// without its leading `com.` (so `stripe.*` matches `com.stripe.charge.succeeded`).
#[derive(Debug, Clone)]
pub struct ScopeSet {
    set: GlobSet,
}

impl ScopeSet {
    /// Compiles a list of glob patterns.
    pub fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ScopeError> {
        if patterns.is_empty() {
            return Err(ScopeError::Empty);
        }
        if patterns.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany);
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            if p.is_empty() || p.len() > MAX_SCOPE_LEN || p.chars().any(char::is_control) {
                return Err(ScopeError::Invalid {
                    pattern: p.to_string(),
                    reason: format!("must be 1..={MAX_SCOPE_LEN} printable characters"),
                });
            }
            let g = Glob::new(p).map_err(|e| ScopeError::Invalid {
                pattern: p.to_string(),
                reason: e.kind().to_string(),
            })?;
            b.add(g);
        }
        let set = b.build().map_err(|e| ScopeError::Invalid {
            pattern: patterns
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<_>>()
                .join(","),
            reason: e.to_string(),
        })?;
        Ok(Self { set })
    }

    /// True if the event type is in scope.
    pub fn matches(&self, event_type: &str) -> bool {
        self.set.is_match(event_type)
            || event_type
                .strip_prefix("com.")
                .is_some_and(|t| self.set.is_match(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stripe_glob_matches_with_and_without_com() {
        let s = ScopeSet::compile(&["stripe.*"]).unwrap();
        assert!(s.matches("com.stripe.payment_intent.succeeded"));
        assert!(s.matches("stripe.charge"));
        assert!(!s.matches("com.github.push"));
        let all = ScopeSet::compile(&["*"]).unwrap();
        assert!(all.matches("com.github.push"));
    }

    #[test]
    fn invalid_glob_names_pattern() {
        let e = ScopeSet::compile(&["ok.*", "bad[", "x"]).unwrap_err();
        match e {
            ScopeError::Invalid { pattern, .. } => assert_eq!(pattern, "bad["),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            ScopeSet::compile::<&str>(&[]).unwrap_err(),
            ScopeError::Empty
        );
    }

    proptest! {
        #[test]
        fn star_matches_everything(t in "[a-z0-9_.]{0,64}") {
            let s = ScopeSet::compile(&["*"]).unwrap();
            prop_assert!(s.matches(&t));
        }

        #[test]
        fn literal_matches_itself_and_com_form(t in "[a-z0-9_]{1,12}(\\.[a-z0-9_]{1,12}){0,3}") {
            let s = ScopeSet::compile(&[t.as_str()]).unwrap();
            prop_assert!(s.matches(&t));
            let with_com = format!("com.{t}");
            prop_assert!(s.matches(&with_com));
        }

        #[test]
        fn compile_never_panics(p in "\\PC{0,40}") {
            let _ = ScopeSet::compile(&[p]);
        }
    }
}
