//! `kiln-bench limit`: the largest fleet a server sustains on this machine.
//!
//! Owns the definition of "sustains" ([`Criteria`], [`judge`]) and the
//! search over fleet sizes ([`search`]), both pure: the search takes a
//! closure that measures one fleet size, so the command drives it with
//! [`crate::run::run`] (a fresh fleet, server and data dir per step) and
//! the tests with a fake.
//!
//! A step is **sustained** when all of these hold over its steady window
//! (see [`crate::run::summarise`]):
//!
//! 1. the server ran to the end (it started, got ready and did not die);
//! 2. every target was scraped in every whole scrape interval inside the
//!    window, as counted by the fleet: at least [`Criteria::min_scrapes_on_time`]
//!    of the (target, interval) pairs;
//! 3. no scrape failed: the server's failed-scrapes counter did not grow
//!    over the window (where it has one) and `count(up == 0)` is 0 at the
//!    end (at least one of the two must be known);
//! 4. samples appended per second are at least [`Criteria::min_appended`]
//!    of those offered (more is expected: the server adds its own `up` and
//!    `scrape_*` series);
//! 5. the server's CPU stays at or below [`Criteria::max_cpu_share`] of
//!    the cores left once the fleet's own share is taken out;
//! 6. its RSS grew by at most [`Criteria::max_rss_growth`] over the window.
//!
//! A criterion that could not be measured counts as failed: a limit is only
//! claimed on evidence.

use serde::{Deserialize, Serialize};

use crate::model::FleetSpec;
use crate::run::RunReport;

/// Thresholds of "sustains"; serialised with every limit found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criteria {
    /// Cores of the machine.
    pub cores: f64,
    /// Share of (target, interval) scrapes that must happen.
    pub min_scrapes_on_time: f64,
    /// Appended samples/s over offered samples/s, at least.
    pub min_appended: f64,
    /// Server cores over (machine cores − fleet cores), at most.
    pub max_cpu_share: f64,
    /// RSS at the window's end over its start, minus 1, at most.
    pub max_rss_growth: f64,
}

impl Criteria {
    /// The documented thresholds on a machine of `cores` cores.
    pub fn new(cores: f64) -> Self {
        Self {
            cores,
            min_scrapes_on_time: 0.99,
            min_appended: 0.99,
            max_cpu_share: 0.95,
            max_rss_growth: 0.20,
        }
    }
}

/// One criterion applied to one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub criterion: String,
    pub passed: bool,
    pub measured: String,
    pub required: String,
}

fn check(criterion: &str, passed: bool, measured: String, required: String) -> Check {
    Check {
        criterion: criterion.to_owned(),
        passed,
        measured,
        required,
    }
}

fn unmeasured(criterion: &str, why: &str, required: String) -> Check {
    check(criterion, false, format!("not measured: {why}"), required)
}

/// Whether a run sustained its load, with every criterion's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub sustained: bool,
    pub checks: Vec<Check>,
}

impl Verdict {
    /// The criteria that failed, as one line.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {} (needs {})", c.criterion, c.measured, c.required))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Applies every criterion to a finished run (its summary already derived).
pub fn judge(run: &RunReport, criteria: &Criteria) -> Verdict {
    let s = &run.summary;
    let mut checks = Vec::new();
    checks.push(check(
        "server ran",
        run.outcome.status == "completed",
        if run.outcome.detail.is_empty() {
            run.outcome.status.clone()
        } else {
            format!("{}: {}", run.outcome.status, run.outcome.detail)
        },
        "completed".to_owned(),
    ));

    let required = format!("≥ {:.1} %", criteria.min_scrapes_on_time * 100.0);
    checks.push(match (s.scrapes_on_time, s.scrape_intervals) {
        (Some(share), Some(intervals)) => check(
            "scrapes on time",
            share >= criteria.min_scrapes_on_time,
            format!(
                "{:.2} % of {} targets × {intervals} intervals",
                share * 100.0,
                run.fleet.targets
            ),
            required,
        ),
        _ => unmeasured(
            "scrapes on time",
            "no whole scrape interval in the steady window, or no counts from the fleet",
            required,
        ),
    });

    let required = "0 failed, 0 targets down".to_owned();
    let known: Vec<(&str, f64)> = [
        ("failed-scrapes counter +", s.failed_scrapes),
        ("targets down", s.targets_down),
    ]
    .into_iter()
    .filter_map(|(name, v)| Some((name, v?)))
    .collect();
    checks.push(if known.is_empty() {
        unmeasured(
            "no failed scrapes",
            "no failed-scrapes counter and no answer to count(up == 0)",
            required,
        )
    } else {
        check(
            "no failed scrapes",
            known.iter().all(|(_, v)| *v == 0.0),
            known
                .iter()
                .map(|(name, v)| format!("{name} {v:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            required,
        )
    });

    let offered = run.offered_samples_per_s;
    let required = format!(
        "≥ {:.0} % of {offered:.0}/s offered",
        criteria.min_appended * 100.0
    );
    checks.push(match s.samples_per_s {
        Some(rate) => check(
            "samples appended",
            rate >= criteria.min_appended * offered,
            format!(
                "{rate:.0}/s ({:.1} %)",
                100.0 * rate / offered.max(f64::MIN_POSITIVE)
            ),
            required,
        ),
        None => unmeasured("samples appended", "no samples-appended rate", required),
    });

    let fleet = s.fleet_cpu_cores.unwrap_or(0.0);
    let budget = criteria.max_cpu_share * (criteria.cores - fleet);
    let required = format!(
        "≤ {budget:.3} cores ({:.0} % of {} cores − the fleet's {fleet:.3})",
        criteria.max_cpu_share * 100.0,
        criteria.cores
    );
    checks.push(match s.cpu_cores {
        Some(cores) => check(
            "CPU",
            cores <= budget,
            format!("{cores:.3} cores"),
            required,
        ),
        None => unmeasured("CPU", "no steady window", required),
    });

    let required = format!("≤ {:.0} %", criteria.max_rss_growth * 100.0);
    checks.push(match s.rss_growth {
        Some(growth) => check(
            "RSS growth",
            growth <= criteria.max_rss_growth,
            format!("{:+.1} % over the window", growth * 100.0),
            required,
        ),
        None => unmeasured("RSS growth", "no steady window", required),
    });

    Verdict {
        sustained: checks.iter().all(|c| c.passed),
        checks,
    }
}

/// The search's bounds: geometric growth from `from` until a step fails
/// (or shrinking, when `from` already fails), then bisection until the
/// bracket is within `precision` of the sustained size; never more than
/// `max_steps` measurements and never above `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchParams {
    pub from: usize,
    pub max: usize,
    pub growth: f64,
    /// Relative width at which a bracket [sustained, unsustained) is
    /// narrow enough (0.1: within 10 %, and never below 1 target).
    pub precision: f64,
    pub max_steps: usize,
}

/// Why the search stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The limit lies in [limit, unsustained), narrower than the precision.
    Bracketed,
    /// Even `max` was sustained: the limit is at least that.
    ReachedMax,
    /// Not even one target was sustained.
    NothingSustained,
    /// `max_steps` were measured before the bracket was narrow enough.
    OutOfSteps,
}

/// What the search measured and concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// Every measured size and whether it was sustained, in order.
    pub steps: Vec<(usize, bool)>,
    /// The largest sustained size.
    pub limit: Option<usize>,
    /// The smallest unsustained size above it.
    pub unsustained: Option<usize>,
    pub end: End,
}

/// The next size to measure given the bracket so far, `None` when done.
fn next_size(p: &SearchParams, sustained: Option<usize>, failed: Option<usize>) -> Option<usize> {
    let max = p.max.max(1);
    match (sustained, failed) {
        (None, None) => Some(p.from.clamp(1, max)),
        (Some(lo), None) if lo >= max => None,
        (Some(lo), None) => Some(((lo as f64 * p.growth).round() as usize).clamp(lo + 1, max)),
        (None, Some(hi)) if hi <= 1 => None,
        (None, Some(hi)) => Some(((hi as f64 / p.growth) as usize).clamp(1, hi - 1)),
        (Some(lo), Some(hi)) => {
            let narrow = (hi - lo) as f64 <= (lo as f64 * p.precision).max(1.0);
            (!narrow).then(|| lo + (hi - lo) / 2)
        }
    }
}

/// Searches the largest size `sustains` accepts (see [`SearchParams`]).
/// `sustains` is called once per step with the fleet size to measure.
pub fn search(p: &SearchParams, mut sustains: impl FnMut(usize) -> bool) -> Search {
    let (mut lo, mut hi) = (None, None);
    let mut steps = Vec::new();
    let mut end = End::OutOfSteps;
    for step in 0..=p.max_steps {
        let Some(size) = next_size(p, lo, hi) else {
            end = match (lo, hi) {
                (Some(_), None) => End::ReachedMax,
                (None, _) => End::NothingSustained,
                (Some(_), Some(_)) => End::Bracketed,
            };
            break;
        };
        if step == p.max_steps {
            break;
        }
        let ok = sustains(size);
        steps.push((size, ok));
        if ok {
            lo = Some(size);
        } else {
            hi = Some(size);
        }
    }
    Search {
        steps,
        limit: lo,
        unsustained: hi,
        end,
    }
}

/// One measured step of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitStep {
    pub targets: usize,
    /// Series the fleet serves per interval.
    pub series: usize,
    pub offered_samples_per_s: f64,
    pub verdict: Verdict,
    /// The step's `run.json`.
    pub run: String,
}

/// A server's search, as written to `limit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitReport {
    pub server: String,
    /// The first step's fleet; later steps differ in `targets` only.
    pub fleet: FleetSpec,
    pub criteria: Criteria,
    pub search: SearchParams,
    pub end: End,
    /// The largest sustained step.
    pub limit: Option<LimitStep>,
    /// The smallest unsustained step above it: its failed checks are the
    /// evidence of where the limit lies.
    pub unsustained: Option<LimitStep>,
    pub steps: Vec<LimitStep>,
}

impl LimitReport {
    /// Assembles the report from the search and its measured steps.
    pub fn new(
        server: &str,
        fleet: FleetSpec,
        criteria: Criteria,
        search_params: SearchParams,
        found: &Search,
        steps: Vec<LimitStep>,
    ) -> Self {
        let step = |size: Option<usize>| {
            size.and_then(|n| steps.iter().find(|s| s.targets == n))
                .cloned()
        };
        Self {
            server: server.to_owned(),
            fleet,
            criteria,
            search: search_params,
            end: found.end,
            limit: step(found.limit),
            unsustained: step(found.unsustained),
            steps,
        }
    }

    /// The conclusion in a few lines of text.
    pub fn describe(&self) -> String {
        let interval_s = self.fleet.interval_ms as f64 / 1000.0;
        let mut out = match &self.limit {
            Some(l) => format!(
                "{}: sustains {} targets × {} series every {interval_s} s ({:.0} samples/s offered)",
                self.server, l.targets, self.fleet.series_per_target, l.offered_samples_per_s
            ),
            None => format!("{}: sustained no fleet size tried", self.server),
        };
        match (&self.unsustained, self.end) {
            (Some(u), _) => out.push_str(&format!(
                "\n  not at {} targets ({:.0} samples/s): {}",
                u.targets,
                u.offered_samples_per_s,
                u.verdict.failures()
            )),
            (None, End::ReachedMax) => out.push_str(&format!(
                "\n  the limit is at least that: --max-targets {} was reached",
                self.search.max
            )),
            (None, End::OutOfSteps) if self.limit.is_some() => out.push_str(
                "\n  the limit is at least that: --max-steps ran out before a step failed",
            ),
            (None, _) => {}
        }
        out.push_str(&format!(
            "\n  search ended: {} after {} steps",
            match self.end {
                End::Bracketed => "bracketed within --precision",
                End::ReachedMax => "reached --max-targets",
                End::NothingSustained => "nothing sustained down to 1 target",
                End::OutOfSteps if self.unsustained.is_some() =>
                    "out of --max-steps (the bracket is wider than --precision)",
                End::OutOfSteps => "out of --max-steps",
            },
            self.steps.len()
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ScrapeStats;
    use crate::run;

    fn params() -> SearchParams {
        SearchParams {
            from: 100,
            max: 20_000,
            growth: 2.0,
            precision: 0.1,
            max_steps: 20,
        }
    }

    #[test]
    fn ramps_up_then_bisects_to_the_precision() {
        let found = search(&params(), |n| n <= 1_000);
        let sizes: Vec<usize> = found.steps.iter().map(|s| s.0).collect();
        // ×2 up to the first failure, then halves of the bracket until it
        // is within 10 % of the sustained size.
        assert_eq!(sizes, [100, 200, 400, 800, 1_600, 1_200, 1_000, 1_100]);
        assert_eq!(found.limit, Some(1_000));
        assert_eq!(found.unsustained, Some(1_100));
        assert_eq!(found.end, End::Bracketed);
        assert!(found.steps.iter().all(|&(n, ok)| ok == (n <= 1_000)));
    }

    #[test]
    fn shrinks_when_the_first_size_fails() {
        let found = search(&params(), |n| n <= 30);
        let sizes: Vec<usize> = found.steps.iter().map(|s| s.0).collect();
        // [29, 31) is within 10 % of 29: the search stops there.
        assert_eq!(sizes, [100, 50, 25, 37, 31, 28, 29]);
        assert_eq!((found.limit, found.unsustained), (Some(29), Some(31)));
        assert_eq!(found.end, End::Bracketed);
    }

    #[test]
    fn stops_at_the_maximum_nothing_or_the_step_budget() {
        let p = SearchParams {
            max: 500,
            ..params()
        };
        let found = search(&p, |_| true);
        assert_eq!(
            found.steps,
            [(100, true), (200, true), (400, true), (500, true)]
        );
        assert_eq!((found.limit, found.end), (Some(500), End::ReachedMax));

        let found = search(&params(), |_| false);
        assert_eq!(found.steps.last(), Some(&(1, false)));
        assert_eq!(found.steps.len(), 7, "100, 50, 25, 12, 6, 3, 1");
        assert_eq!((found.limit, found.end), (None, End::NothingSustained));

        let p = SearchParams {
            max_steps: 3,
            ..params()
        };
        let mut calls = 0;
        let found = search(&p, |n| {
            calls += 1;
            n < 10_000
        });
        assert_eq!(calls, 3);
        assert_eq!((found.limit, found.end), (Some(400), End::OutOfSteps));
    }

    #[test]
    fn never_measures_a_size_twice_even_when_noise_contradicts() {
        // Sustained only at odd sizes: a non-monotonic, noisy server.
        let mut seen = std::collections::HashSet::new();
        let found = search(&params(), |n| {
            assert!(seen.insert(n), "{n} measured twice");
            n % 2 == 1
        });
        let (lo, hi) = (found.limit.unwrap_or(0), found.unsustained.unwrap());
        assert!(lo < hi);
        assert!(found.steps.len() <= params().max_steps);
    }

    #[test]
    fn the_conclusion_names_the_failed_criterion_or_the_bound() {
        let criteria = Criteria::new(2.0);
        let step = |targets: usize, run: &RunReport| LimitStep {
            targets,
            series: targets * 200,
            offered_samples_per_s: targets as f64 * 100.0,
            verdict: judge(run, &criteria),
            run: format!("step-{targets}/run.json"),
        };
        let good = sustained_run();
        let mut slow = sustained_run();
        slow.summary.scrapes_on_time = Some(0.9);
        let mut fleet = good.fleet.clone();
        fleet.series_per_target = 200;
        fleet.interval_ms = 2_000;
        let p = SearchParams {
            from: 10,
            max_steps: 2,
            ..params()
        };
        let found = search(&p, |n| n <= 10);
        let steps = vec![step(10, &good), step(20, &slow)];
        let report = LimitReport::new(
            "x",
            fleet.clone(),
            criteria.clone(),
            p.clone(),
            &found,
            steps,
        );
        assert_eq!(report.limit.as_ref().map(|s| s.targets), Some(10));
        assert_eq!(
            report.describe(),
            "x: sustains 10 targets × 200 series every 2 s (1000 samples/s offered)\n  \
             not at 20 targets (2000 samples/s): scrapes on time: 90.00 % of 4 targets × 4 \
             intervals (needs ≥ 99.0 %)\n  \
             search ended: out of --max-steps (the bracket is wider than --precision) after 2 steps"
        );
        // Every step sustained when the steps run out: a lower bound only.
        let found = search(&p, |_| true);
        let steps = vec![step(10, &good), step(20, &good)];
        let report = LimitReport::new("x", fleet, criteria, p, &found, steps);
        assert!(report.describe().ends_with(
            "(2000 samples/s offered)\n  \
             the limit is at least that: --max-steps ran out before a step failed\n  \
             search ended: out of --max-steps after 2 steps"
        ));
    }

    /// A run that meets every criterion on a 2-core machine: 4 targets at
    /// 15 s, 2,000 samples/s offered.
    fn sustained_run() -> RunReport {
        let mut report = run::tests::fixture();
        report.fleet.targets = 4;
        report.offered_samples_per_s = 2_000.0;
        report.queries.clear();
        report.fleet_scrapes = Some(ScrapeStats::default());
        report.summary = run::Summary {
            samples_per_s: Some(2_010.0),
            cpu_cores: Some(0.5),
            fleet_cpu_cores: Some(0.1),
            scrapes_on_time: Some(1.0),
            scrape_intervals: Some(4),
            failed_scrapes: None,
            targets_down: Some(0.0),
            rss_growth: Some(0.05),
            ..run::Summary::default()
        };
        report
    }

    /// Changes one measurement of a run.
    type Spoil = fn(&mut RunReport);

    fn failed(verdict: &Verdict) -> Vec<&str> {
        verdict
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.criterion.as_str())
            .collect()
    }

    #[test]
    fn every_criterion_can_fail_alone() {
        let criteria = Criteria::new(2.0);
        let verdict = judge(&sustained_run(), &criteria);
        assert!(verdict.sustained, "{}", verdict.failures());
        assert_eq!(verdict.checks.len(), 6);

        let cases: [(&str, Spoil); 9] = [
            ("server ran", |r| r.outcome.status = "died".into()),
            ("scrapes on time", |r| {
                r.summary.scrapes_on_time = Some(0.989);
            }),
            ("scrapes on time", |r| r.summary.scrape_intervals = None),
            ("no failed scrapes", |r| r.summary.targets_down = Some(1.0)),
            ("no failed scrapes", |r| {
                r.summary.failed_scrapes = Some(3.0);
            }),
            ("no failed scrapes", |r| r.summary.targets_down = None),
            ("samples appended", |r| {
                r.summary.samples_per_s = Some(1_979.0);
            }),
            // 0.95 × (2 − 0.1) = 1.805 cores.
            ("CPU", |r| r.summary.cpu_cores = Some(1.81)),
            ("RSS growth", |r| r.summary.rss_growth = Some(0.21)),
        ];
        for (criterion, spoil) in cases {
            let mut run = sustained_run();
            spoil(&mut run);
            let verdict = judge(&run, &criteria);
            assert!(!verdict.sustained, "{criterion}");
            assert_eq!(failed(&verdict), [criterion]);
            assert!(verdict.failures().starts_with(criterion));
        }

        // At the thresholds: still sustained.
        let mut run = sustained_run();
        run.summary.scrapes_on_time = Some(0.99);
        run.summary.samples_per_s = Some(1_980.0);
        run.summary.cpu_cores = Some(1.8);
        run.summary.rss_growth = Some(0.2);
        run.summary.failed_scrapes = Some(0.0);
        let verdict = judge(&run, &criteria);
        assert!(verdict.sustained, "{}", verdict.failures());
        assert_eq!(
            verdict.checks[2].measured,
            "failed-scrapes counter + 0, targets down 0"
        );
    }
}
