//! What the migration could not carry over, approximated, or wants the user
//! to know. Every annotation the tool reads or skips ends up here or in the
//! output: nothing is dropped silently.

use std::fmt::Write as _;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Carried over differently from ingress-nginx, or not at all: the
    /// migrated config behaves differently. Makes `migrate` exit non-zero
    /// unless `--allow-lossy`.
    Lossy,
    /// Carried over faithfully, but worth knowing (a default made explicit,
    /// an ingress-nginx quirk reproduced, a step left to the user).
    Note,
}

/// One finding: the object, the annotation (or field), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Lossy or note.
    pub severity: Severity,
    /// `Ingress ns/name`, or `-` for the input as a whole.
    pub object: String,
    /// The annotation without its prefix (`canary-weight`), or a field
    /// (`spec.tls`).
    pub annotation: String,
    /// Why, in one sentence.
    pub reason: String,
}

/// Every finding, in the order they were made.
#[derive(Default, Debug)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Record that something was not carried over, or only approximated.
    pub fn lossy(&mut self, object: &str, annotation: &str, reason: impl Into<String>) {
        self.push(Severity::Lossy, object, annotation, reason.into());
    }

    /// Record something carried over that the user should know.
    pub fn note(&mut self, object: &str, annotation: &str, reason: impl Into<String>) {
        self.push(Severity::Note, object, annotation, reason.into());
    }

    fn push(&mut self, severity: Severity, object: &str, annotation: &str, reason: String) {
        let f = Finding {
            severity,
            object: object.to_owned(),
            annotation: annotation.to_owned(),
            reason,
        };
        if !self.findings.contains(&f) {
            self.findings.push(f);
        }
    }

    /// Turn `object`'s LOSSY findings into notes, saying why: what is not
    /// carried over from it changes nothing (a canary ingress-nginx never
    /// uses, say).
    pub fn downgrade(&mut self, object: &str, why: &str) {
        for f in self
            .findings
            .iter_mut()
            .filter(|f| f.severity == Severity::Lossy && f.object == object)
        {
            f.severity = Severity::Note;
            f.reason = format!("{} ({why})", f.reason);
        }
    }

    /// True when anything was lossy.
    pub fn is_lossy(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Lossy)
    }

    /// The report as text, lossy findings first, one line each:
    /// `LOSSY  Ingress shop/web  canary-by-header-pattern  reason`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let lossy = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Lossy)
            .count();
        let notes = self.findings.len() - lossy;
        let _ = writeln!(out, "# sticky-canary migrate: {lossy} lossy, {notes} notes");
        for sev in [Severity::Lossy, Severity::Note] {
            for f in self.findings.iter().filter(|f| f.severity == sev) {
                let tag = match sev {
                    Severity::Lossy => "LOSSY",
                    Severity::Note => "note ",
                };
                let _ = writeln!(out, "{tag}  {}  {}  {}", f.object, f.annotation, f.reason);
            }
        }
        out
    }
}
