//! The promqltest runner (placeholder while the engine lands).

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Evals that matched.
    pub passed: usize,
    /// Evals that did not.
    pub failed: usize,
    /// Evals not run.
    pub skipped: usize,
}
