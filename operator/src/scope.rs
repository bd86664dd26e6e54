//! Which namespaces the operator acts in: all of them, or a list (`--namespace a,b`), so that
//! a namespaced install never touches a hub, CSR or binding of another namespace.

/// All namespaces when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    namespaces: Vec<String>,
}

impl Scope {
    /// Every namespace.
    pub fn all() -> Self {
        Self::default()
    }

    /// The given namespaces, without blanks and duplicates (sorted); none means all.
    pub fn namespaces<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut namespaces: Vec<String> = names
            .into_iter()
            .map(|n| n.as_ref().trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        Self { namespaces }
    }

    /// A comma-separated list, as `--namespace` and the chart's `watchNamespace` pass it.
    pub fn parse(list: &str) -> Self {
        Self::namespaces(list.split(','))
    }

    /// Adds the namespaces of `other` (a repeated `--namespace`).
    pub fn extend(&mut self, other: Scope) {
        *self = Self::namespaces(self.namespaces.iter().chain(other.namespaces.iter()));
    }

    pub fn is_all(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// The watched namespaces; empty for all.
    pub fn list(&self) -> &[String] {
        &self.namespaces
    }

    /// Whether objects in `namespace` are this operator's business.
    pub fn contains(&self, namespace: &str) -> bool {
        self.is_all() || self.namespaces.iter().any(|n| n == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_drops_blanks_and_duplicates() {
        let s = Scope::parse(" b, a,,b ,");
        assert_eq!(s.list(), ["a", "b"]);
        assert!(s.contains("a") && s.contains("b"));
        assert!(!s.contains("c"));
        assert!(!s.is_all());
    }

    #[test]
    fn empty_is_all() {
        for s in [Scope::parse(""), Scope::parse(" , "), Scope::all()] {
            assert!(s.is_all());
            assert!(s.contains("anything"));
        }
    }

    #[test]
    fn extend_merges() {
        let mut s = Scope::parse("a");
        s.extend(Scope::parse("c,a"));
        assert_eq!(s.list(), ["a", "c"]);
        let mut all = Scope::all();
        all.extend(Scope::all());
        assert!(all.is_all());
    }
}
